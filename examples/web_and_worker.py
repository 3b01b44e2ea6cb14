"""A web process hands work to worker processes through one durably file.

    python examples/web_and_worker.py worker --db shop.db   # run 1..N of these
    python examples/web_and_worker.py web --db shop.db      # HTTP on :8080
    python examples/web_and_worker.py demo                  # both, end to end

The web process opens the engine in *client mode*: it starts workflows by
name and reads their results, without importing the workflow code and
without running anything. Each worker process opens its own engine with the
workflows registered; a workflow a client started is claimed by one worker
(atomically), and if that worker dies, another takes it over (at once on the
same host; after its lease elsewhere) and resumes it from its journal.

    curl -X POST localhost:8080/orders -d '{"sku": "book", "qty": 2}'
    curl localhost:8080/orders/<id>
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import durably

# -- the worker: the workflow code lives here only --------------------------------------------


def worker_engine(db: str) -> durably.Engine:
    engine = durably.Engine(db)

    @engine.step()
    def reserve(sku: str, qty: int) -> str:
        time.sleep(0.05)  # a call to the inventory service
        return f"res-{sku}-{qty}"

    @engine.step()
    def charge(order: dict[str, Any]) -> str:
        time.sleep(0.05)  # a call to the payment provider
        return f"ch-{order['sku']}-{order['qty'] * 10}"

    @engine.workflow(name="process_order")
    def process_order(order: dict[str, Any]) -> dict[str, Any]:
        reservation = reserve(order["sku"], order["qty"])
        engine.set_event("stage", "reserved")
        return {"reservation": reservation, "charge": charge(order), "worker": os.getpid()}

    return engine


def run_worker(db: str) -> None:
    stop = threading.Event()

    def on_term(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    with worker_engine(db):
        print(f"worker {os.getpid()} serving {db}", flush=True)
        stop.wait()


# -- the web process: a client, no workflow code ------------------------------------------------


def make_handler(engine: durably.Engine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            order = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            # An idempotency key from the caller makes a retried POST start nothing new.
            key = self.headers.get("Idempotency-Key")
            handle = engine.start("process_order", order, workflow_id=f"order-{key}" if key else None)
            self._send(202, {"id": handle.workflow_id})

        def do_GET(self) -> None:
            wid = self.path.rsplit("/", 1)[-1]
            try:
                info = engine.handle(wid).info()
            except durably.WorkflowNotFoundError:
                return self._send(404, {"error": f"no order {wid}"})
            body: dict[str, Any] = {"id": wid, "status": info.status.value}
            if info.status is durably.Status.SUCCESS:
                body["result"] = engine.handle(wid).result()
            self._send(200, body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class Ready(threading.Event):
    """Set once the web process listens, on ``port``."""

    port = 0


def run_web(db: str, port: int, ready: Ready | None = None, stop: threading.Event | None = None) -> None:
    with durably.Engine(db, client=True) as engine:
        server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(engine))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        print(f"web on http://127.0.0.1:{server.server_address[1]}", flush=True)
        if ready is not None:
            ready.port = server.server_address[1]
            ready.set()
        (stop or threading.Event()).wait()
        server.shutdown()


# -- the demo: two workers, the web process, orders, one worker killed -----------------------------


def demo() -> int:
    with tempfile.TemporaryDirectory() as d:
        db = str(Path(d) / "shop.db")
        durably.Engine(db).open().close()  # create the file once
        workers = [
            subprocess.Popen([sys.executable, __file__, "worker", "--db", db], stdout=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        for w in workers:
            assert w.stdout is not None
            w.stdout.readline()
        ready, stop = Ready(), threading.Event()
        web = threading.Thread(target=run_web, args=(db, 0, ready, stop), daemon=True)
        web.start()
        ready.wait(10)
        base = f"http://127.0.0.1:{ready.port}"

        def post(order: dict[str, Any], key: str) -> str:
            req = urllib.request.Request(
                f"{base}/orders", json.dumps(order).encode(), method="POST", headers={"Idempotency-Key": key}
            )
            return str(json.load(urllib.request.urlopen(req))["id"])

        ids = [post({"sku": f"sku{i}", "qty": i + 1}, f"k{i}") for i in range(6)]
        assert post({"sku": "sku0", "qty": 1}, "k0") == ids[0]  # a retried POST: the same order
        workers[0].kill()  # a worker dies mid-run: the other one finishes its orders
        deadline = time.monotonic() + 30
        results: dict[str, dict[str, Any]] = {}
        while len(results) < len(ids) and time.monotonic() < deadline:
            for wid in ids:
                body: dict[str, Any] = json.load(urllib.request.urlopen(f"{base}/orders/{wid}"))
                if body["status"] == "SUCCESS":
                    results[wid] = body["result"]
            time.sleep(0.1)
        stop.set()
        web.join(10)
        for w in workers:
            w.terminate()
            w.wait(10)
        for _i, wid in enumerate(ids):
            print(wid, results.get(wid, "NOT DONE"))
        ok = len(results) == len(ids) and all(
            r["charge"] == f"ch-sku{i}-{(i + 1) * 10}" for i, r in enumerate(results[w] for w in ids)
        )
        print("all orders done exactly once:", ok)
        return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=["worker", "web", "demo"])
    parser.add_argument("--db", default="shop.db")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    if args.role == "worker":
        run_worker(args.db)
    elif args.role == "web":
        run_web(args.db, args.port)
    else:
        return demo()
    return 0


if __name__ == "__main__":
    sys.exit(main())
