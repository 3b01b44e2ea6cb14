"""Checkout: steps, a transaction step, idempotent ids, and recovery.

    python examples/checkout.py            # run it
    python examples/checkout.py --crash    # die (SIGKILL) after charging; run again to finish

Run it twice with --crash: the first run charges the card and is killed
before recording the sale; the second run recovers the workflow, does *not*
charge again (the charge was recorded, so it is not killed either), records
the sale once and finishes.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass

import durably

engine = durably.Engine("checkout.db")


@dataclass
class Receipt:
    id: str
    cents: int


charged_here: list[str] = []  # the charges this process made (a replayed one is not)


@engine.step(retries=3, backoff=2.0, initial_delay=0.2)
def charge(order_id: str, cents: int) -> Receipt:
    print(f"  charging {order_id}: {cents} cents (a real call to a payment API would go here)")
    charged_here.append(order_id)
    return Receipt(id=f"ch-{order_id}", cents=cents)


@engine.transaction()
def create_tables(db: durably.Tx) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS sales (order_id TEXT PRIMARY KEY, charge_id TEXT, cents INTEGER)")


@engine.transaction()
def record_sale(db: durably.Tx, order_id: str, receipt: Receipt) -> None:
    db.execute("INSERT INTO sales VALUES (?, ?, ?)", (order_id, receipt.id, receipt.cents))


@engine.workflow()
def checkout(order_id: str, cents: int) -> str:
    create_tables()
    receipt = charge(order_id, cents)
    if "--crash" in sys.argv and order_id in charged_here:
        print("  SIGKILL after the charge was recorded")
        os.kill(os.getpid(), signal.SIGKILL)
    record_sale(order_id, receipt)
    return receipt.id


if __name__ == "__main__":
    with engine:
        if engine.recovery.resumed:
            print(f"recovered: {engine.recovery.resumed}")
        handle = engine.start(checkout, "o-42", 1299, workflow_id="order-o-42")
        print(f"order-o-42 -> {handle.result(timeout=30)} ({handle.status()})")
        for step in engine.steps("order-o-42"):
            print(f"  step {step.position}: {step.name} = {step.output}")
