"""The web view in a real headless Chromium (Debian's ``chromium`` package,
driven by Playwright through ``executable_path``: nothing downloaded), on
both backends, beside a worker process running the workflows
(tests/_cliworker.py). Screenshots go to $DURABLY_UI_ARTIFACTS (default: a
``ui-screenshots`` folder under pytest's temporary directory)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import durably

from ._uiserver import served, worker

CHROMIUM = os.environ.get("DURABLY_CHROMIUM", "/usr/bin/chromium")
if os.environ.get("DURABLY_REQUIRE_BROWSER") and not os.path.exists(CHROMIUM):  # CI: a skip would hide them
    raise RuntimeError(f"DURABLY_REQUIRE_BROWSER is set but there is no chromium at {CHROMIUM}")
if not shutil.which(CHROMIUM):
    pytest.skip(f"browser tests skipped: no chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests skipped: pip install playwright")
pytest.importorskip("starlette")

HOSTILE = '<img src=x onerror="window.__pwned=1">'
TIMEOUT = 15_000  # ms a page has to show what is awaited


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    where = os.environ.get("DURABLY_UI_ARTIFACTS")
    path = Path(where) if where else tmp_path_factory.mktemp("ui-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A worker process on a database, a client Engine, the view read-only and with actions."""
    from .conftest import pg_schema_url

    urls = pg_schema_url() if request.param == "postgresql" else None
    tmp = tmp_path_factory.mktemp("uib")
    db = next(urls) if urls is not None else str(tmp / "live.db")
    try:
        with (
            worker(db, tmp),
            durably.Engine(db, client=True) as client,
            served(db) as url,
            served(db, "--allow-actions", "--interval", "300ms") as acting,
        ):
            yield {"db": db, "client": client, "url": url, "acting": acting, "backend": request.param}
    finally:
        if urls is not None:
            next(urls, None)


class Page:
    """A browser tab that records console errors and uncaught exceptions."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 800})
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT)
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))


@pytest.fixture
def tab(browser) -> Iterator[Page]:
    page = Page(browser)
    try:
        yield page
    finally:
        page.context.close()


def _rows(page: Any) -> list[str]:
    return [str(x) for x in page.eval_on_selector_all("#workflow-rows tr[data-id]", "rs => rs.map(r => r.dataset.id)")]


def test_pages_load_without_console_errors(live, tab, shots) -> None:
    client, page = live["client"], tab.page
    wid = f"tour-{uuid.uuid4().hex[:8]}"
    client.start("parent", 3, workflow_id=wid)
    page.goto(live["url"] + "/")
    page.wait_for_selector(f'#workflow-rows tr[data-id="{wid}"]')
    page.wait_for_selector(".chip")
    page.screenshot(path=str(shots / f"workflows-{live['backend']}.png"), full_page=True)
    page.click("#nav-queues")
    page.wait_for_selector("#queue-rows tr >> text=q")
    page.screenshot(path=str(shots / f"queues-{live['backend']}.png"))
    page.click("#nav-schedules")
    page.wait_for_selector("#schedule-rows tr >> text=hourly")
    page.screenshot(path=str(shots / f"schedules-{live['backend']}.png"))
    page.goto(f"{live['url']}/#/wf/{wid}")
    page.wait_for_selector(f"#children a >> text={wid}/0")
    page.screenshot(path=str(shots / f"workflow-{live['backend']}.png"), full_page=True)
    assert page.text_content("#mode") == "read-only" and page.locator("#do-cancel").count() == 0
    assert tab.errors == []
    client.send(f"{wid}/0", 1, topic="go")


def test_a_workflow_started_while_the_page_is_open_appears_without_a_reload(live, tab) -> None:
    client, page = live["client"], tab.page
    tag = uuid.uuid4().hex[:8]
    page.goto(f"{live['url']}/#/?id_prefix=n-{tag}")
    page.wait_for_selector("#workflow-rows td.muted")  # "no workflows match"
    page.evaluate("window.__same_page = true")
    client.start("quick", 4, workflow_id=f"n-{tag}")
    page.wait_for_selector(f'#workflow-rows tr[data-id="n-{tag}"] >> text=SUCCESS')
    assert page.evaluate("window.__same_page") is True and _rows(page) == [f"n-{tag}"]
    assert tab.errors == []


def test_the_timeline_shows_the_recorded_steps(live, tab, shots) -> None:
    client, page = live["client"], tab.page
    wid = f"t-{uuid.uuid4().hex[:8]}"
    client.start("waiter", 7, workflow_id=wid)
    client.send(wid, "hello", topic="later")
    page.goto(f"{live['url']}/#/wf/{wid}")
    page.wait_for_selector("#timeline tr.step >> text=set_event:progress")
    names = page.eval_on_selector_all("#timeline tr.step td:nth-child(2)", "cs => cs.map(c => c.textContent)")
    assert names[:2] == ["add", "set_event:progress"]
    assert page.locator("#timeline .bar span").count() == len(names)
    assert "progress" in page.text_content("body") and "hello" in page.text_content("body")
    client.send(wid, 1, topic="go")
    page.wait_for_selector("#wf-output")  # the page follows it to its end
    assert page.text_content("#wf-output") == "9"
    steps = page.eval_on_selector_all("#timeline tr.step td:nth-child(2)", "cs => cs.map(c => c.textContent)")
    assert steps[-1] == "add" and len(steps) > len(names)
    page.screenshot(path=str(shots / f"timeline-{live['backend']}.png"), full_page=True)
    assert tab.errors == []


def test_filters_work(live, tab) -> None:
    client, page = live["client"], tab.page
    tag = uuid.uuid4().hex[:8]
    client.start("quick", 1, workflow_id=f"f-{tag}-done")
    client.start("waiter", 1, workflow_id=f"f-{tag}-waits")
    page.goto(live["url"] + "/")
    page.wait_for_selector("#filters")
    page.fill("#filters input[name=id_prefix]", f"f-{tag}")
    page.click("#filters button[type=submit]")
    page.wait_for_function("n => document.querySelectorAll('#workflow-rows tr[data-id]').length === n", arg=2)
    assert sorted(_rows(page)) == [f"f-{tag}-done", f"f-{tag}-waits"]
    page.select_option("#filters select[name=status]", "SUCCESS")
    page.wait_for_function("() => document.querySelectorAll('#workflow-rows tr[data-id]').length === 1")
    assert _rows(page) == [f"f-{tag}-done"] and "status=SUCCESS" in page.url
    page.click('.chip[data-status="PENDING"]')
    page.wait_for_selector(f'#workflow-rows tr[data-id="f-{tag}-waits"]')
    assert _rows(page) == [f"f-{tag}-waits"]
    page.fill("#filters input[name=name]", "quick")
    page.click("#filters button[type=submit]")
    page.wait_for_selector("#workflow-rows td.muted")
    assert _rows(page) == []
    assert tab.errors == []
    client.send(f"f-{tag}-waits", 1, topic="go")


def test_a_hostile_id_renders_as_text_and_runs_nothing(live, tab, shots) -> None:
    client, page = live["client"], tab.page
    hostile = f"{HOSTILE}{uuid.uuid4().hex[:6]}"
    client.start("waiter", 1, workflow_id=hostile)
    client.send(hostile, {"html": "<script>window.__pwned=2</script>"}, topic="<b>x</b>")
    page.goto(f"{live['url']}/#/?id_prefix=%3Cimg")
    page.wait_for_selector("#workflow-rows tr[data-id] a")
    link_texts = page.eval_on_selector_all("#workflow-rows tr[data-id] a", "as => as.map(a => a.textContent)")
    assert hostile in link_texts
    assert page.locator("main img").count() == 0 and page.locator("main script").count() == 0
    page.goto(f"{live['url']}/#/wf/{hostile.replace('<', '%3C').replace('>', '%3E').replace(' ', '%20')}")
    page.wait_for_selector("#wf-id")
    page.wait_for_selector("text=<script>window.__pwned=2</script>", timeout=TIMEOUT)
    assert page.text_content("#wf-id") == hostile
    assert page.locator("main img").count() == 0 and page.locator("main b").count() == 0
    page.screenshot(path=str(shots / f"hostile-{live['backend']}.png"), full_page=True)
    assert page.evaluate("window.__pwned") is None and tab.dialogs == []
    assert tab.errors == []
    client.send(hostile, 1, topic="go")


_POST = """async ([action, body, token]) => {
  const headers = {"Content-Type": "application/json"};
  if (token) headers["X-CSRF-Token"] = token;
  const r = await fetch(`/api/actions/${action}`, {method: "POST", headers, body: JSON.stringify(body)});
  return [r.status, await r.text()];
}"""
_CSRF = "document.querySelector('meta[name=durably-csrf]').content"


def test_actions_are_refused_without_the_flag_or_the_csrf_token(live, tab) -> None:
    client, page = live["client"], tab.page
    wid = f"x-{uuid.uuid4().hex[:8]}"
    client.start("waiter", 1, workflow_id=wid)
    page.goto(f"{live['url']}/#/wf/{wid}")
    page.wait_for_selector("#wf-id")
    assert page.locator("#do-cancel").count() == 0  # read-only: no buttons
    status, text = page.evaluate(_POST, ["cancel", {"workflow_id": wid}, page.evaluate(_CSRF)])
    assert status == 403 and "--allow-actions" in text
    page.goto(f"{live['acting']}/#/wf/{wid}")
    page.wait_for_selector("#do-cancel")
    status, text = page.evaluate(_POST, ["cancel", {"workflow_id": wid}, None])
    assert status == 403 and "CSRF" in text
    assert client.handle(wid).status() == durably.Status.PENDING
    page.click("#do-cancel")
    page.wait_for_selector("#action-result >> text=CANCELLED")
    assert client.handle(wid).status() == durably.Status.CANCELLED
    page.wait_for_selector(".facts .status >> text=CANCELLED")
    # the console shows the refused fetches (403) as resource errors; nothing else
    assert [e for e in tab.errors if "403" not in e] == []
