"""The shop's workflows on the plugin's engines: in virtual time (the
charge's retry and the three days before the review request wait on the
engine's clock, so they take no real time), on a file, and through the queue."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import durably
from examples.shop.flows import REVIEW_DELAY, GatewayBusy, OutOfStock, fulfil, nightly


def test_an_order_is_reserved_charged_shipped_and_reviewed_three_days_later(
    durably_run: Callable[..., Any],
    durably_steps: Callable[..., Any],
    durably_clock: durably.VirtualClock,
    outbox: Path,
) -> None:
    start = durably_clock.now()
    parcel = durably_run(fulfil, "o-1", "book", 2, 2400, workflow_id="o-1")
    assert parcel == "parcel-o-1-book"
    # The gateway was busy once: charge ran twice (its retry waited 2 s of
    # virtual time) and recorded one outcome. After shipping, the order
    # waited three days of virtual time (reg.sleep, on this engine's clock)
    # and asked for a review.
    durably_steps(
        "o-1",
        [
            "reserve",
            ("charge", "ch-o-1-2400"),
            ("ship", "parcel-o-1-book"),
            "set_event:parcel",
            "sleep",
            ("review_request", "how was parcel-o-1-book?"),
        ],
    )
    assert durably_clock.now() - start >= REVIEW_DELAY == 3 * 86400
    assert (outbox / "attempts-o-1").read_text() == "2"
    assert (outbox / "reserved-o-1").read_text() == "2 x book"
    assert (outbox / "review-o-1").read_text() == "how was parcel-o-1-book?"


def test_out_of_stock_charges_nothing(
    durably_run: Callable[..., Any], durably_steps: Callable[..., Any], outbox: Path
) -> None:
    with pytest.raises(durably.WorkflowFailedError) as failed:
        durably_run(fulfil, "o-2", "gone-lamp", 1, 900, workflow_id="o-2")
    assert isinstance(failed.value.__cause__, OutOfStock) or "OutOfStock" in str(failed.value)
    durably_steps("o-2", [("reserve", OutOfStock)])
    assert not (outbox / "charged-o-2").exists()


def test_a_gateway_that_stays_busy_releases_the_reservation(
    durably_run: Callable[..., Any], durably_steps: Callable[..., Any], outbox: Path
) -> None:
    with pytest.raises(durably.WorkflowFailedError):
        durably_run(fulfil, "busy-3", "book", 1, 1200, workflow_id="o-3")
    durably_steps("o-3", ["reserve", ("charge", GatewayBusy), "release"])
    assert (outbox / "attempts-busy-3").read_text() == "5"  # the first try and 4 retries, in virtual time
    assert not (outbox / "reserved-busy-3").exists()


def test_on_a_file_the_same_declarations_run(durably_engine: durably.Engine, outbox: Path) -> None:
    """In real time: the order ships (its "parcel" event) and waits its three
    days for the review request, durably (a restart wakes it on time)."""
    durably_engine.start(fulfil, "o-4", "book", 1, 1200, workflow_id="o-4")
    assert durably_engine.get_event("o-4", "parcel", timeout=30) == "parcel-o-4-book"
    again = durably_engine.start(fulfil, "o-4", "book", 1, 1200, workflow_id="o-4")  # an idempotency key
    assert again.workflow_id == "o-4" and again.status() == "PENDING"
    recorded = [s.name for s in durably_engine.steps("o-4")]  # the event committed with its step
    assert recorded[:4] == ["shop.reserve", "shop.charge", "shop.ship", "set_event:parcel"]
    assert not (outbox / "review-o-4").exists()


def test_a_night_of_orders_through_the_queue(durably_run: Callable[..., Any]) -> None:
    assert durably_run(nightly, ["n-1", "n-2", "n-3"]) == [f"parcel-n-{i}-book" for i in (1, 2, 3)]
