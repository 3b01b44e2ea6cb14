"""The shop's workflows, declared on a registry: no engine is made here.

``app.py`` binds them to the application's engine; the tests bind the same
declarations to engines of their own (an in-memory one with a virtual
clock, a file in a temporary folder, a crash-test child's), with no module
state to patch.

The workflow code calls the engine's durable toolkit on the registry
(``reg.sleep``, ``reg.set_event``): each call goes to the engine running
the workflow, as the steps do.

Every step's effect outside durably is idempotent: it writes a file named
after the order (the same content when run again), so a step that runs
again after a crash (its outcome was not yet durable) changes nothing. The
crash-test helper checks exactly that (tests/test_crashes.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import durably

reg = durably.Registry()


class OutOfStock(Exception):
    """The order cannot be filled: nothing is charged."""


class GatewayBusy(Exception):
    """The payment gateway asked us to come back later (retried)."""


def outbox() -> Path:
    """Where the shop's effects land (a folder per environment)."""
    path = Path(os.environ.get("SHOP_OUTBOX", "outbox"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _effect(kind: str, order_id: str, text: str) -> str:
    (outbox() / f"{kind}-{order_id}").write_text(text)  # idempotent: same file, same text
    return text


# Explicit names: the recorded history names these, so a module or function
# rename keeps them (tests/test_replayer.py replays last release's histories).
@reg.step(name="shop.reserve")
def reserve(order_id: str, sku: str, quantity: int) -> str:
    if sku.startswith("gone-"):
        raise OutOfStock(sku)
    return _effect("reserved", order_id, f"{quantity} x {sku}")


# The gateway is busy on the first attempt of every order: the retry waits
# on the engine's clock (2 s here; virtual in the tests, so no wait at all).
RETRY_DELAY = float(os.environ.get("SHOP_RETRY_DELAY", "2"))


@reg.step(name="shop.charge", retries=4, initial_delay=RETRY_DELAY, retry_on=GatewayBusy)
def charge(order_id: str, cents: int) -> str:
    attempts = outbox() / f"attempts-{order_id}"
    tried = int(attempts.read_text()) if attempts.exists() else 0
    attempts.write_text(str(tried + 1))
    if tried == 0 or order_id.startswith("busy-"):  # (the stand-in gateway: "busy-" orders never pass)
        raise GatewayBusy(order_id)
    return _effect("charged", order_id, f"ch-{order_id}-{cents}")


@reg.step(name="shop.ship")
def ship(order_id: str, sku: str) -> str:
    return _effect("shipped", order_id, f"parcel-{order_id}-{sku}")


@reg.step(name="shop.release")
def release(order_id: str) -> None:
    (outbox() / f"reserved-{order_id}").unlink(missing_ok=True)


# How long after shipping the customer is asked for a review: three days
# (virtual in the tests; the crash test's children, in real time, wait 10 ms).
REVIEW_DELAY = float(os.environ.get("SHOP_REVIEW_DELAY", str(3 * 86400)))


@reg.step(name="shop.review_request")
def review_request(order_id: str, parcel: str) -> str:
    return _effect("review", order_id, f"how was {parcel}?")


@reg.workflow(name="shop.fulfil")
def fulfil(order_id: str, sku: str, quantity: int, cents: int) -> str:
    """Reserve, charge, ship, and three days later ask for a review: the
    parcel's id. The parcel is published as the event ``"parcel"`` as soon
    as it ships (app.py prints it without waiting the three days).
    OutOfStock charges nothing (this release reserves first; the last one
    charged first: see tests/released.py and the Replayer's test)."""
    reserve(order_id, sku, quantity)
    try:
        charge(order_id, cents)
    except GatewayBusy:
        release(order_id)  # the compensation, itself a step
        raise
    parcel = ship(order_id, sku)
    reg.set_event("parcel", parcel)
    reg.sleep(REVIEW_DELAY)  # durable: a restart in between wakes at the recorded time
    review_request(order_id, parcel)
    return parcel


orders = reg.queue("orders", concurrency=8)


@reg.workflow(name="shop.nightly")
def nightly(order_ids: list[str]) -> list[str]:
    """Fulfil a night's orders through the queue, each its own workflow."""
    handles = [orders.enqueue(fulfil, oid, "book", 1, 1200) for oid in order_ids]
    return [h.result() for h in handles]
