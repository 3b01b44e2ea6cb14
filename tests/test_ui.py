"""The web view over HTTP (no browser): ``durably ui`` served by the console
script in one process, beside a worker process running the workflows
(tests/_cliworker.py), on both backends. What it lists, shows and refuses;
the headers that keep a stored string from running; the actions' guards.
The browser's side is tests/test_ui_browser.py."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import durably

from ._uiserver import env, served, until, worker

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request, tmp_path_factory) -> Iterator[tuple[str, Any, str]]:
    """(database, a client Engine on it, the read-only view's URL) while a worker process runs it."""
    from .conftest import pg_schema_url

    urls = pg_schema_url() if request.param == "postgresql" else None
    tmp = tmp_path_factory.mktemp("ui")
    db = next(urls) if urls is not None else str(tmp / "live.db")
    try:
        with worker(db, tmp), durably.Engine(db, client=True) as client, served(db) as url:
            yield db, client, url
    finally:
        if urls is not None:
            next(urls, None)


def _get(url: str, path: str, **params: Any) -> Any:
    response = httpx.get(url + path, params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _ids(doc: dict[str, Any]) -> list[str]:
    return [w["workflow_id"] for w in doc["workflows"]]


def test_the_list_filters_counts_and_follows_new_workflows(live) -> None:
    db, client, url = live
    tag = uuid.uuid4().hex[:8]
    before = _get(url, "/api/workflows")["counts"]
    for i in range(3):
        client.start("quick", i, workflow_id=f"q-{tag}-{i}")
    client.start("waiter", 5, workflow_id=f"w-{tag}")
    # started in another process while the view runs: seen by the next poll, without a restart
    until(lambda: len(_ids(_get(url, "/api/workflows", id_prefix=f"q-{tag}-", status="SUCCESS"))) == 3)
    doc = _get(url, "/api/workflows", id_prefix=f"q-{tag}-")
    assert sorted(_ids(doc)) == [f"q-{tag}-{i}" for i in range(3)] and doc["more"] is False
    assert _ids(_get(url, "/api/workflows", id_prefix=f"q-{tag}-", oldest_first="1")) == [
        f"q-{tag}-{i}" for i in range(3)
    ]
    assert _ids(_get(url, "/api/workflows", id_prefix=f"q-{tag}-", limit="2", offset="1")) == [
        f"q-{tag}-1",
        f"q-{tag}-0",
    ]
    assert f"w-{tag}" in _ids(_get(url, "/api/workflows", status="PENDING", name="waiter"))
    assert f"w-{tag}" not in _ids(_get(url, "/api/workflows", status="SUCCESS"))
    assert _ids(_get(url, "/api/workflows", name="quick", id_prefix=f"w-{tag}")) == []
    assert _get(url, "/api/workflows", since="@0", until="@1")["workflows"] == []
    counts = until(lambda: (c := _get(url, "/api/workflows")["counts"])["SUCCESS"] >= before["SUCCESS"] + 3 and c)
    assert counts["PENDING"] >= before["PENDING"] + 1 and set(counts) == set(durably.Status.__members__)
    for bad in ({"status": "DONE"}, {"since": "yesterday-ish"}, {"limit": "-1"}, {"offset": "x"}):
        response = httpx.get(url + "/api/workflows", params=bad, timeout=10)
        assert response.status_code == 400 and response.json()["error"]


def test_the_workflow_page_has_steps_children_events_and_messages(live) -> None:
    db, client, url = live
    tag = uuid.uuid4().hex[:8]
    client.start("parent", 1, workflow_id=f"p-{tag}")
    child = f"p-{tag}/0"
    until(lambda: _get(url, "/api/workflow", id=child)["events"] if _status(url, child) else None)
    client.send(child, {"note": HOSTILE}, topic="note")  # not the topic it waits on: stays waiting
    doc = until(lambda: (d := _get(url, "/api/workflow", id=child))["messages"] and d)
    assert doc["workflow"]["status"] == "PENDING" and doc["workflow"]["input"] == {"args": [1], "kwargs": {}}
    assert [(s["position"], s["name"]) for s in doc["steps"]][:2] == [(0, "add"), (1, "set_event:progress")]
    assert doc["steps"][0]["output"] == 2
    step = doc["steps"][0]
    assert step["duration"] is not None and step["recorded_at"] >= step["started_at"]
    assert doc["events"] == {"progress": 2}
    assert [(m["topic"], m["payload"]) for m in doc["messages"]] == [("note", {"note": HOSTILE})]
    assert doc["workflow"]["trace_id"] is None and doc["workflow"]["terminal"] is False
    parent = _get(url, "/api/workflow", id=f"p-{tag}")
    assert [(c["workflow_id"], c["name"]) for c in parent["children"]] == [(child, "waiter")]
    client.send(child, 10, topic="go")
    done = until(lambda: (d := _get(url, "/api/workflow", id=f"p-{tag}"))["workflow"]["status"] == "SUCCESS" and d)
    assert done["workflow"]["output"] == 13 and done["children"][0]["status"] == "SUCCESS"
    assert httpx.get(url + "/api/workflow", params={"id": "no-such"}, timeout=10).status_code == 404
    assert httpx.get(url + "/api/workflow", timeout=10).status_code == 400


def _status(url: str, workflow_id: str) -> str | None:
    response = httpx.get(url + "/api/workflow", params={"id": workflow_id}, timeout=10)
    return response.json()["workflow"]["status"] if response.status_code == 200 else None


def test_an_error_shows_its_type_message_and_attributes(live) -> None:
    db, client, url = live
    bad = f"e-{uuid.uuid4().hex[:8]}"
    client.start("quick", "not a number", workflow_id=bad)  # quick(x: int): its input does not decode
    doc = until(lambda: (d := _get(url, "/api/workflow", id=bad))["workflow"]["status"] == "ERROR" and d)
    detail = doc["workflow"]["error_detail"]
    assert detail["type"] == "durably.errors.SerializationError" and detail["message"] and detail["traceback"] is None
    assert isinstance(detail["fields"], dict) and doc["workflow"]["error"]["type"] == detail["type"]


def test_queues_and_schedules(live) -> None:
    db, client, url = live
    queues = {q["queue"]: q for q in _get(url, "/api/queues")["queues"]}
    assert queues["q"]["concurrency"] == 2 and queues["q"]["rate_limit"] == {"starts": 100, "seconds": 1.0}
    (hourly,) = [s for s in _get(url, "/api/schedules")["schedules"] if s["name"] == "hourly"]
    assert hourly["cron"] == "0 * * * *" and hourly["workflow"] == "tick" and hourly["paused"] is False
    assert hourly["next_slot"].endswith(":00:00+00:00")


def test_the_page_is_static_and_locked_down(live) -> None:
    db, client, url = live
    client.start("quick", 1, workflow_id=HOSTILE)
    until(lambda: HOSTILE in _ids(_get(url, "/api/workflows", id_prefix="<img")))
    page = httpx.get(url + "/", timeout=10)
    assert page.status_code == 200 and "<img" not in page.text  # the page holds no stored data: its script builds it
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
    script = httpx.get(url + "/static/app.js", timeout=10).text
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "eval(" not in script
    # DNS rebinding: another name for this address is refused
    assert httpx.get(url + "/api/workflows", headers={"Host": "evil.example"}, timeout=10).status_code == 400


def test_actions_are_refused_without_the_flag(live) -> None:
    db, client, url = live
    wid = f"a-{uuid.uuid4().hex[:8]}"
    client.start("waiter", 1, workflow_id=wid)
    csrf = _csrf(url)
    response = httpx.post(
        url + "/api/actions/cancel", json={"workflow_id": wid}, headers={"X-CSRF-Token": csrf}, timeout=10
    )
    assert response.status_code == 403 and "--allow-actions" in response.json()["error"]
    assert httpx.get(url + "/api/actions/cancel", timeout=10).status_code == 405
    assert _status(url, wid) == "PENDING"
    client.cancel(wid)


def _csrf(url: str, **kw: Any) -> str:
    page = httpx.get(url + "/", timeout=10, **kw).text
    return page.split('name="durably-csrf" content="', 1)[1].split('"', 1)[0]


def test_actions_with_the_flag_need_the_csrf_token_and_the_same_origin(live) -> None:
    db, client, url = live
    wid = f"c-{uuid.uuid4().hex[:8]}"
    client.start("waiter", 1, workflow_id=wid)
    with served(db, "--allow-actions") as acting:
        csrf = _csrf(acting)
        post = lambda action, body, **headers: httpx.post(  # noqa: E731
            f"{acting}/api/actions/{action}", json=body, headers=headers, timeout=30
        )
        assert post("cancel", {"workflow_id": wid}).status_code == 403  # no token
        assert post("cancel", {"workflow_id": wid}, **{"X-CSRF-Token": "forged"}).status_code == 403
        cross = {"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}
        assert post("cancel", {"workflow_id": wid}, **cross).status_code == 403
        other = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
        assert post("cancel", {"workflow_id": wid}, **other).status_code == 403
        form = httpx.post(f"{acting}/api/actions/cancel", data={"workflow_id": wid}, headers={"X-CSRF-Token": csrf})
        assert form.status_code == 403  # a form post (what another site can send) is refused
        assert _status(url, wid) == "PENDING"
        ok = {"X-CSRF-Token": csrf, "Origin": acting, "Sec-Fetch-Site": "same-origin"}
        assert post("cancel", {"workflow_id": wid}, **ok).json()["status"] == "CANCELLED"
        again = post("cancel", {"workflow_id": wid}, **ok)
        assert again.status_code == 409 and "already ended" in again.json()["error"]
        assert post("cancel", {"workflow_id": "no-such"}, **ok).status_code == 400
        assert post("explode", {"workflow_id": wid}, **ok).status_code == 400
        resumed = post("resume", {"workflow_id": wid}, **ok).json()
        assert resumed["status"] in ("PENDING", "ENQUEUED")
        forked = post("fork", {"workflow_id": wid, "from_step": 1}, **ok).json()
        assert forked["from"] == wid and forked["workflow_id"] != wid
        assert post("fork", {"workflow_id": wid, "from_step": -1}, **ok).status_code == 400
    for done in (wid, forked["workflow_id"]):
        client.send(done, 0, topic="go")


def test_a_token_guards_every_request(live) -> None:
    db, client, url = live
    token = "t" * 24
    with served(db, "--token", token) as guarded:
        assert httpx.get(guarded + "/api/workflows", timeout=10).status_code == 401
        assert httpx.get(guarded + "/", timeout=10).status_code == 401
        bearer = {"Authorization": f"Bearer {token}"}
        assert httpx.get(guarded + "/api/queues", headers=bearer, timeout=10).status_code == 200
        wrong = {"Authorization": "Bearer " + "x" * 24}
        assert httpx.get(guarded + "/api/queues", headers=wrong, timeout=10).status_code == 401
        with httpx.Client(base_url=guarded, timeout=10) as browser:
            first = browser.get("/", params={"token": token})
            assert first.status_code == 303 and "httponly" in first.headers["set-cookie"].lower()
            assert browser.get("/api/workflows").status_code == 200  # the cookie, from then on


def _ui(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "durably", "ui", *args], capture_output=True, text=True, env=env(), timeout=60
    )


def test_the_command_refuses_what_it_cannot_serve_safely(tmp_path) -> None:
    with durably.Engine(str(tmp_path / "ok.db")):
        pass
    db = str(tmp_path / "ok.db")
    refused = _ui(db, "--host", "0.0.0.0")
    assert refused.returncode == 2 and "--token" in refused.stderr
    assert _ui(db, "--host", "0.0.0.0", "--token", "short").returncode == 2
    assert _ui(str(tmp_path / "missing.db")).returncode == 2
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    missing = _ui(str(junk))
    assert missing.returncode == 2 and missing.stderr.startswith("durably:")


def test_reading_a_closed_file_writes_nothing(tmp_path) -> None:
    """A file no engine has open is read as it is: unchanged, no -wal or -shm,
    and an engine that opens it while the view runs is seen at the next poll."""
    db = str(tmp_path / "closed.db")
    engine = durably.Engine(db)

    @engine.workflow(name="one")
    def one(x: int) -> int:
        return x

    with engine:
        engine.run(one, 1, workflow_id="first")
    before = Path(db).read_bytes()
    with served(db) as url:
        assert _ids(_get(url, "/api/workflows")) == ["first"]
        _get(url, "/api/workflow", id="first")
        _get(url, "/api/queues")
        _get(url, "/api/schedules")
        assert Path(db).read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["closed.db"]
        with engine:
            engine.run(one, 2, workflow_id="second")
            assert _ids(_get(url, "/api/workflows")) == ["second", "first"]
        assert _ids(_get(url, "/api/workflows")) == ["second", "first"]
