"""An order saga with a human in the loop, compensation, a deadline and a queue.

    python examples/approval_saga.py            # real time: approvals arrive after a moment
    python examples/approval_saga.py --virtual  # the same, in virtual time (a test would do this)

Each order reserves stock, then waits (durably, up to two days) for a human
approval sent as a message; approved orders are charged and shipped through
a queue with a concurrency limit; rejected or unanswered orders release their
stock (compensation, in reverse order of what was done). Kill the process at
any point and run it again: every workflow resumes where it stopped, no
message is lost or received twice, and no stock is reserved or released twice.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

import durably

parser = argparse.ArgumentParser()
parser.add_argument("--db", default=os.path.join(tempfile.gettempdir(), "durably-saga.db"))
parser.add_argument("--virtual", action="store_true", help="run on a VirtualClock")
opts = parser.parse_args()

clock = durably.VirtualClock() if opts.virtual else None
engine = durably.Engine(opts.db, clock=clock)
shipping = engine.queue("shipping", concurrency=2)
APPROVAL_WINDOW = 2 * 86400.0


@engine.step(retries=3, initial_delay=0.1)
def reserve_stock(order: str) -> str:
    return f"res-{order}"


@engine.step()
def release_stock(reservation: str) -> None:
    print(f"  compensate: released {reservation}")


@engine.step()
def charge(order: str) -> str:
    return f"pay-{order}"


@engine.step()
def ship(order: str) -> str:
    return f"parcel-{order}"


@engine.workflow(name="shipment")
def shipment(order: str) -> str:
    return ship(order)


@engine.workflow(name="order")
def order_saga(order: str) -> str:
    reservation = reserve_stock(order)
    engine.set_event("state", "awaiting approval")
    decision = engine.recv("approval", timeout=APPROVAL_WINDOW)
    if decision != "approve":
        release_stock(reservation)  # compensation
        engine.set_event("state", "cancelled")
        return f"{order}: {'no answer' if decision is None else 'rejected'}, stock released"
    payment = charge(order)
    parcel = shipping.enqueue(shipment, order).result()
    engine.set_event("state", "shipped")
    return f"{order}: {payment}, {parcel}"


def approver(decisions: dict[str, str | None]) -> None:
    """Plays the human: answers each order once it asks (and still waits)."""
    try:
        for wid, decision in decisions.items():
            state = engine.get_event(wid, "state", timeout=None)
            if decision is not None and state == "awaiting approval":
                engine.send(wid, decision, topic="approval")
    except durably.NotOpenError:
        return  # the program ended first


def main() -> int:
    decisions = {"order-1": "approve", "order-2": "reject", "order-3": "approve", "order-4": None}
    with engine:
        if engine.recovery.resumed:
            print(f"resumed after a restart: {', '.join(engine.recovery.resumed)}")
        handles = [engine.start(order_saga, wid, workflow_id=wid) for wid in decisions]
        helper = threading.Thread(target=approver, args=(decisions,), daemon=True)
        helper.start()
        if clock is None:
            print("order-4 gets no answer: its approval window is two days (use --virtual to skip ahead)")
            handles = handles[:3]
        elif handles[3].status() is durably.Status.PENDING:  # (a run again finds it finished)
            clock.wait_for_timers(1)  # order-4 is waiting for its approval deadline
            time.sleep(0.2)  # the others got their answers
            clock.advance(APPROVAL_WINDOW)
        for h in handles:
            print(h.result(timeout=30))
        helper.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
