"""The shop's order workflow as last released: it charged before it reserved.

Kept to record histories as production holds them, so the Replayer's test
(test_replayer.py) shows what this release's change (reserve first, so an
order out of stock is never charged) does to the runs the last release
recorded. Same names as flows.py; the bodies are stand-ins (a replay runs
none of them).
"""

from __future__ import annotations

import durably

reg = durably.Registry()


@reg.step(name="shop.charge")
def charge(order_id: str, cents: int) -> str:
    return f"ch-{order_id}-{cents}"


@reg.step(name="shop.reserve")
def reserve(order_id: str, sku: str, quantity: int) -> str:
    return f"{quantity} x {sku}"


@reg.step(name="shop.ship")
def ship(order_id: str, sku: str) -> str:
    return f"parcel-{order_id}-{sku}"


@reg.workflow(name="shop.fulfil")
def fulfil(order_id: str, sku: str, quantity: int, cents: int) -> str:
    charge(order_id, cents)
    reserve(order_id, sku, quantity)
    return ship(order_id, sku)
