"""The shop's order workflow SIGKILLed at every step boundary (and at seeded
random moments), recovered each time: it must end as the uninterrupted run
did. Its steps run again when killed after their body and before their
outcome was durable, so their effects must be idempotent (files named
after the order): the report names them, and they change nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from durably.testing.plugin import CrashChecker
from examples.shop.flows import fulfil


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The crash test's children run in real time: the charge's retry waits
    # 10 ms there, not 2 s, and the review request comes 10 ms after
    # shipping, not 3 days (read when flows.py is imported, in each child).
    monkeypatch.setenv("SHOP_RETRY_DELAY", "0.01")
    monkeypatch.setenv("SHOP_REVIEW_DELAY", "0.01")
    root = str(Path(__file__).resolve().parents[3])  # the children import examples.shop
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))


def test_an_order_survives_a_kill_at_every_step(durably_crash: CrashChecker) -> None:
    report = durably_crash.check(fulfil, "o-1", "book", 1, 1200, random_kills=2)
    report.assert_ok()  # every recovery ended as the uninterrupted run: "parcel-o-1-book"
    # Bodies that ran again after a kill (their effects are idempotent here):
    assert set(report.rerun_steps) <= {"shop.reserve", "shop.charge", "shop.ship", "shop.review_request"}
    assert report.rerun_steps  # killed after a body, before its outcome was durable: it ran again
