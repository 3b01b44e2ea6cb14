"""The application: the shop's engine, bound to the declarations of flows.py.

    python -m examples.shop.app [DB]     # fulfils three orders, prints the parcels

It prints each parcel as it ships (the workflow's ``"parcel"`` event) and
closes: the orders' review requests, three days later, are sent by a run
of the app after that (the sleeps are durable; set SHOP_REVIEW_DELAY, in
seconds, to try it sooner). Run again on the same database, it prints the
same parcels and runs nothing again (the workflow ids are the orders').
Its tests: ``python -m pytest examples/shop/tests``.
"""

from __future__ import annotations

import sys

import durably

from .flows import fulfil, reg


def make_engine(path: str = "shop.db") -> durably.Engine:
    return durably.Engine(path, registry=reg)


def main(path: str = "shop.db") -> None:
    with make_engine(path) as engine:
        orders = [f"order-{n}" for n in (1, 2, 3)]
        for n, oid in enumerate(orders, 1):
            engine.start(fulfil, oid, "book", n, 1200 * n, workflow_id=oid)
        for oid in orders:
            print(f"{oid}: {engine.get_event(oid, 'parcel', timeout=60)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
