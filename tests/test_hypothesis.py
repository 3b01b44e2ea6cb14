"""Property tests: Cython journal vs twin (differential) and a stateful engine model."""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import durably
from durably import _records as R
from durably import errors
from durably.journal import _journal_py
from durably.store import Store

from .conftest import database, expected_implementation

# -- differential: the compiled journal and the twin commit the same records ----

wids = st.sampled_from(["a", "b", "c", "d"])
values = st.one_of(st.none(), st.integers(-5, 5).map(str), st.text(max_size=5).map(lambda s: f'"{s}"'))
record = st.one_of(
    st.tuples(st.just(R.START), st.tuples(wids, st.sampled_from(["f", "g"]), st.just("[[],{}]"), st.none(), st.none())),
    st.tuples(
        st.just(R.STEP),
        st.tuples(wids, st.integers(0, 3), st.sampled_from(["s", "t"]), values, st.none(), st.none(), st.none()),
    ),
    st.tuples(st.just(R.COMPLETE), st.tuples(st.sampled_from(["SUCCESS", "ERROR"]), values, st.none(), wids)),
    st.tuples(st.just(R.WRITE), st.tuples(st.just("park"), st.tuples(st.text(max_size=3), wids))),
)
batches = st.lists(st.lists(record, min_size=1, max_size=8), min_size=1, max_size=8)


def _replay_into(module: Any, path: str, plan: list[list[tuple[int, Any]]]) -> tuple[Any, ...]:
    store = Store(path)
    store.open()
    journal = module.Journal(store.flush)
    journal.start()
    outcomes: list[Any] = []

    async def run_batch(batch: list[tuple[int, Any]]) -> None:
        futs = []
        for kind, params in batch:
            rec = module.Record(kind, params)
            futs.append(journal.submit_async(rec))
        for fut in futs:
            try:
                outcomes.append(("ok", await fut))
            except errors.DurablyError as exc:
                outcomes.append(("err", type(exc).__name__))

    for batch in plan:
        asyncio.run(run_batch(batch))
    journal.stop()
    state = (
        store.query("SELECT workflow_id, name, status, output, error, parked FROM workflows ORDER BY 1"),
        store.query("SELECT workflow_id, position, name, output, error FROM steps ORDER BY 1, 2"),
    )
    store.close()
    return tuple(outcomes), state


@pytest.mark.skipif(expected_implementation() != "cython", reason="needs the compiled journal")
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=batches)
def test_compiled_journal_commits_what_the_twin_commits(plan: list[list[tuple[int, Any]]]) -> None:
    from durably.journal import _journal_c

    with tempfile.TemporaryDirectory() as d:
        twin = _replay_into(_journal_py, str(Path(d) / "twin.db"), plan)
        compiled = _replay_into(_journal_c, str(Path(d) / "c.db"), plan)
    assert compiled == twin


# -- stateful model of the engine API --------------------------------------------

IDS = st.sampled_from([f"w{i}" for i in range(6)])


class EngineModel(RuleBasedStateMachine):
    """Start, wait, cancel, resume, reopen: the database must match a simple model."""

    kind = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        self.dir = database(self.kind)
        self.path = self.dir.__enter__()
        self.bodies: Counter[tuple[str, int]] = Counter()
        self.model: dict[str, dict[str, Any]] = {}
        self.engine = self._build()
        self.engine.open()

    def _build(self) -> durably.Engine:
        engine = durably.Engine(self.path, workers=2)

        @engine.step(name="part")
        def part(i: int) -> int:
            self.bodies[(engine.workflow_id, i)] += 1
            return i * i

        @engine.workflow(name="squares")
        def squares(n: int, fail: bool) -> int:
            total = sum(part(i) for i in range(n))
            if fail:
                raise ValueError(f"failing after {n} steps")
            return total

        self.squares = squares
        return engine

    def teardown(self) -> None:
        self.engine.close()
        self.dir.__exit__(None, None, None)

    @rule(wid=IDS, n=st.integers(0, 4), fail=st.booleans())
    def start(self, wid: str, n: int, fail: bool) -> None:
        h = self.engine.start(self.squares, n, fail, workflow_id=wid)
        if wid not in self.model:
            self.model[wid] = {"n": n, "fail": fail, "status": "ERROR" if fail else "SUCCESS"}
        expected = self.model[wid]
        try:
            got = h.result(timeout=20)
            assert expected["status"] == "SUCCESS"
            assert got == sum(i * i for i in range(expected["n"]))
        except errors.WorkflowFailedError as exc:
            assert expected["status"] == "ERROR" and isinstance(exc.error, ValueError)
        except errors.WorkflowCancelledError:
            assert expected["status"] == "CANCELLED"

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        wid = data.draw(st.sampled_from(sorted(self.model)))
        self.engine.cancel(wid)  # all finished: nothing changes

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        wid = data.draw(st.sampled_from(sorted(self.model)))
        h = self.engine.resume(wid)
        try:
            h.result(timeout=20)
        except errors.WorkflowFailedError:
            pass
        assert h.status() == self.model[wid]["status"]

    @rule()
    def reopen(self) -> None:
        self.engine.close()
        self.engine = self._build()
        self.engine.open()
        assert self.engine.recovery.resumed == []

    @rule(wid=IDS)
    def missing_handle(self, wid: str) -> None:
        if wid in self.model:
            assert self.engine.handle(wid).status() == self.model[wid]["status"]
        else:
            with pytest.raises(errors.WorkflowNotFoundError):
                self.engine.handle(wid)

    @invariant()
    def database_matches_model(self) -> None:
        rows = {i.workflow_id: i.status for i in self.engine.list_workflows(limit=100)}
        assert rows == {w: m["status"] for w, m in self.model.items()}
        for wid, m in self.model.items():
            assert len(self.engine.steps(wid)) == m["n"]

    @invariant()
    def every_step_body_ran_exactly_once(self) -> None:
        assert all(count == 1 for count in self.bodies.values()), self.bodies
        assert sum(m["n"] for m in self.model.values()) == len(self.bodies)


TestEngineModel = EngineModel.TestCase
TestEngineModel.settings = settings(max_examples=25, stateful_step_count=15, deadline=None)


class PgEngineModel(EngineModel):
    """The same model on PostgreSQL (a fresh schema per example)."""

    kind = "postgresql"


TestPgEngineModel = PgEngineModel.TestCase
TestPgEngineModel.settings = settings(max_examples=15, stateful_step_count=15, deadline=None)
