"""A FastAPI service whose requests start durable workflows.

    pip install fastapi uvicorn gunicorn uvicorn-worker
    cd examples
    uvicorn fastapi_app:app                                        # one process
    gunicorn -k uvicorn_worker.UvicornWorker -w 2 fastapi_app:app  # two worker processes

    curl -X POST localhost:8000/orders/o-1     # starts order o-1 (a retried POST is the same order)
    curl localhost:8000/orders/o-1             # its status and result

The engine lives at module level, where application code reaches it
(``from fastapi_app import engine``); building it opens nothing, so
the module may be imported before a server forks its workers. The app's
lifespan opens it in each worker process and closes it with ``async with``:
on a deploy (SIGTERM) the step bodies that are running finish and their
outcomes are recorded before the process exits, so none runs twice after
the restart, and the workflows still pending resume there.
(``tests/test_web_servers.py`` runs this file under uvicorn and gunicorn,
SIGTERMs it while steps are in flight and checks that.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import FastAPI, HTTPException

import durably

DB = os.environ.get("ORDERS_DB", "orders.db")
STEP_SECONDS = float(os.environ.get("ORDERS_STEP_SECONDS", "1.0"))
RUNS_LOG = os.environ.get("ORDERS_RUNS_LOG")  # each step body notes its run here (for the tests)

engine = durably.Engine(DB)


def _note(what: str) -> None:
    if RUNS_LOG:
        with open(RUNS_LOG, "a") as f:  # a side file of the example's own, not the database
            f.write(f"{what} {os.getpid()}\n")


@engine.step(name="charge")
async def charge(order_id: str) -> str:
    _note(f"charge {order_id}")
    await asyncio.sleep(STEP_SECONDS)  # the payment provider's API
    return f"ch-{order_id}"


@engine.step(name="ship")
async def ship(order_id: str) -> str:
    _note(f"ship {order_id}")
    return f"parcel-{order_id}"


@engine.workflow(name="process_order")
async def process_order(order_id: str) -> dict[str, str]:
    receipt = await charge(order_id)
    parcel = await ship(order_id)
    return {"receipt": receipt, "parcel": parcel}


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncGenerator[None, None]:
    async with engine:  # open here, in the worker; close_async() at shutdown
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/orders/{order_id}")
async def create_order(order_id: str) -> dict[str, str]:
    handle = await engine.start_async(process_order, order_id, workflow_id=f"order-{order_id}")
    return {"workflow_id": handle.workflow_id}


@app.get("/orders/{order_id}")
async def order_status(order_id: str) -> dict[str, Any]:
    try:
        info = engine.handle(f"order-{order_id}").info()
    except durably.WorkflowNotFoundError:
        raise HTTPException(status_code=404, detail=f"no order {order_id!r}") from None
    return {"status": info.status, "output": info.output}
