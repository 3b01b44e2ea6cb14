"""The application: the shop's engine, bound to the declarations of flows.py.

    python -m examples.shop.app [DB]     # fulfils three orders, prints the parcels

Run again on the same database, it prints the same parcels and runs nothing
again (the workflow ids are the orders'). Its tests: ``python -m pytest
examples/shop/tests``.
"""

from __future__ import annotations

import sys

import durably

from .flows import fulfil, reg


def make_engine(path: str = "shop.db") -> durably.Engine:
    return durably.Engine(path, registry=reg)


def main(path: str = "shop.db") -> None:
    with make_engine(path) as engine:
        handles = {
            f"order-{n}": engine.start(fulfil, f"order-{n}", "book", n, 1200 * n, workflow_id=f"order-{n}")
            for n in (1, 2, 3)
        }
        for oid, handle in handles.items():
            print(f"{oid}: {handle.result()}")


if __name__ == "__main__":
    main(*sys.argv[1:])
