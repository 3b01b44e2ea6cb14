"""Micro-benchmarks of the hot path (pytest-benchmark), compiled journal and
pure-Python twin side by side:

    pip install '.[bench]' && pytest bench/test_micro.py --benchmark-columns=median,ops

Not part of the test suite (speed is measured here, never asserted there).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from typing import Any

import pytest

from durably import _records as R
from durably.codec import JsonCodec
from durably.journal import _journal_py

IMPLS = [_journal_py]
try:
    from durably.journal import _journal_c

    IMPLS.insert(0, _journal_c)
except ImportError:  # a twin-only build
    pass

ids = [m.__name__.rsplit(".", 1)[1] for m in IMPLS]


@dataclasses.dataclass
class Receipt:
    id: str
    cents: int
    at: datetime.datetime


def test_record_encode_and_decode(benchmark: Any) -> None:
    codec = JsonCodec()
    decode = codec.decoder(Receipt)
    value = Receipt("r-1", 1299, datetime.datetime(2026, 1, 1))
    benchmark(codec.roundtrip, value, "bench", decode, True)


@pytest.mark.parametrize("impl", IMPLS, ids=ids)
def test_journal_submit_and_flush_one(benchmark: Any, impl: Any) -> None:
    """A lone caller: enqueue, flush (a no-op store), acknowledge."""
    journal = impl.Journal(lambda batch: None)
    journal.start()
    rec = impl.Record(R.WRITE, None)
    benchmark(journal.submit, rec)
    journal.stop()


@pytest.mark.parametrize("impl", IMPLS, ids=ids)
def test_journal_async_batch_of_1000(benchmark: Any, impl: Any) -> None:
    """1,000 asyncio submitters sharing batches (a no-op store)."""
    journal = impl.Journal(lambda batch: None)
    journal.start()

    async def burst() -> None:
        await asyncio.gather(*[journal.submit_async(impl.Record(R.WRITE, i)) for i in range(1000)])

    loop = asyncio.new_event_loop()
    benchmark(lambda: loop.run_until_complete(burst()))
    loop.close()
    journal.stop()


@pytest.fixture
def memory_engine() -> Any:
    from scenarios import counting_engine

    engine, loop = counting_engine(":memory:")
    with engine:
        yield loop


def test_step_call_in_memory_100(benchmark: Any, memory_engine: Any) -> None:
    """One workflow of 100 sequential steps on ':memory:' (no fsync): CPU per step x 100."""
    assert benchmark(memory_engine, 100) == 100
