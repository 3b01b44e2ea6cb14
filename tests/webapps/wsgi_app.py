"""A WSGI app (gunicorn sync workers) whose requests start durable workflows:
the gunicorn recipe of docs/guides/processes.md. The engine lives at module level, where the
app's code reaches it; gunicorn_hooks.py opens it in each worker after the
fork and closes it when the worker exits. Run by tests/test_web_servers.py."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import durably

engine = durably.Engine(os.environ["ORDERS_DB"])
STEP_SECONDS = float(os.environ.get("ORDERS_STEP_SECONDS", "1.0"))
RUNS_LOG = os.environ["ORDERS_RUNS_LOG"]


def _note(what: str) -> None:
    with open(RUNS_LOG, "a") as f:  # the test's own side file, not the database
        f.write(f"{what} {os.getpid()}\n")


@engine.step(name="charge")
def charge(order_id: str) -> str:
    _note(f"charge {order_id}")
    time.sleep(STEP_SECONDS)  # the payment provider's API
    return f"ch-{order_id}"


@engine.step(name="ship")
def ship(order_id: str) -> str:
    _note(f"ship {order_id}")
    return f"parcel-{order_id}"


@engine.workflow(name="process_order")
def process_order(order_id: str) -> dict[str, str]:
    return {"receipt": charge(order_id), "parcel": ship(order_id)}


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    order = environ["PATH_INFO"].rsplit("/", 1)[-1]
    status, body = "200 OK", {}
    if environ["REQUEST_METHOD"] == "POST":
        body = {"workflow_id": engine.start(process_order, order, workflow_id=f"order-{order}").workflow_id}
    else:
        try:
            info = engine.handle(f"order-{order}").info()
            body = {"status": info.status, "output": info.output}
        except durably.WorkflowNotFoundError:
            status = "404 Not Found"
    start_response(status, [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]
