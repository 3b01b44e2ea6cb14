"""Values that cannot be stored get a typed error naming where they came
from, and a database is only ever read with the codec that wrote it."""

from __future__ import annotations

import pytest

import durably
from durably import errors


@pytest.mark.parametrize("first,second", [("pickle", "json"), ("json", "pickle")])
def test_a_database_is_refused_with_another_codec_than_it_was_written_with(db_path, first: str, second: str) -> None:
    engine = durably.Engine(db_path, codec=first)

    @engine.workflow(name="wait")
    def wait() -> str:
        return engine.recv("go", timeout=3600)

    with engine:
        engine.start(wait, workflow_id="pending")
    other = durably.Engine(db_path, codec=second)

    @other.workflow(name="wait")
    def wait2() -> str:
        return other.recv("go", timeout=3600)

    with pytest.raises(errors.CodecMismatchError) as exc:
        other.open()
    assert exc.value.stored == first and exc.value.requested == second
    again = durably.Engine(db_path, codec=first)  # nothing changed: the right codec still opens it

    @again.workflow(name="wait")
    def wait3() -> str:
        return again.recv("go", timeout=3600)

    with again:
        again.send("pending", "now", topic="go")
        assert again.handle("pending").result(timeout=10) == "now"


def test_cyclic_and_deeply_nested_values_raise_serialization_error_naming_the_argument_or_step(make_engine) -> None:
    engine = make_engine()
    cyclic: list = []
    cyclic.append(cyclic)
    deep: list = []
    for _ in range(1000):
        deep = [deep]

    @engine.step(name="makes_a_cycle")
    def makes_a_cycle() -> list:
        return cyclic

    @engine.workflow(name="w")
    def w(x: list) -> str:
        try:
            makes_a_cycle()
        except errors.SerializationError as exc:
            return str(exc)
        return "stored?"

    with engine:
        for bad in (cyclic, deep):
            with pytest.raises(errors.SerializationError, match="inputs of workflow 'w'"):
                engine.start(w, bad)
        assert "makes_a_cycle" in engine.run(w, [1])


class TwoArgs(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class HasDefault(Exception):
    def __init__(self, code: int = 404) -> None:
        super().__init__(f"code {code}")
        self.code = code


def test_exceptions_come_back_with_their_type_args_and_attributes(make_engine, db_path) -> None:
    def build(engine: durably.Engine) -> None:
        @engine.step(name="two")
        def two() -> None:
            raise TwoArgs(500, "boom")

        @engine.step(name="default")
        def default() -> None:
            raise HasDefault(404)

        @engine.workflow(name="w")
        def w() -> list:
            seen = []
            for step in (two, default):
                try:
                    step()
                except Exception as exc:
                    seen.append((type(exc).__name__, exc.args, getattr(exc, "code", None), str(exc)))
            engine.recv("go", timeout=3600)
            return seen

    engine = make_engine()
    build(engine)
    want = [["TwoArgs", [500, "boom"], 500, "(500, 'boom')"], ["HasDefault", ["code 404"], 404, "code 404"]]
    with engine:
        engine.start("w", workflow_id="w1")
        import time

        deadline = time.monotonic() + 10
        while len(engine.steps("w1")) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    again = make_engine()
    build(again)
    with again:  # replayed: the recorded errors, rebuilt
        again.send("w1", "go", topic="go")
        assert again.handle("w1").result(timeout=10) == want


def test_a_user_chosen_id_can_never_be_a_childs_generated_id(make_engine) -> None:
    engine = make_engine()

    @engine.workflow(name="child")
    def child(x: int) -> int:
        return x

    @engine.workflow(name="order")
    def order() -> int:
        return child(7)

    with engine:
        for reserved in ("order/0", "a/b/12", "order/0#1", "order/1.2#0"):
            with pytest.raises(errors.InvalidNameError, match="reserved"):
                engine.start(child, 99, workflow_id=reserved)
        assert engine.run(order, workflow_id="order") == 7  # its child is order/0, and only its own
        assert engine.handle("order/0").result() == 7
        engine.run(child, 1, workflow_id="order/v0")  # other shapes are fine


def test_nan_and_infinity_are_refused_by_the_json_codec_and_kept_by_pickle(make_engine, tmp_path) -> None:
    import math

    engine = make_engine()

    @engine.step(name="floats")
    def floats() -> list:
        return [math.nan, math.inf, -math.inf]

    @engine.step(name="typed")
    def typed() -> float:
        return math.nan

    @engine.workflow(name="w")
    def w(x: float) -> list:
        out = []
        for step in (floats, typed):
            try:
                out.append(step())
            except errors.SerializationError as exc:
                out.append(str(exc).split(":")[0])
        return out

    with engine:
        with pytest.raises(errors.SerializationError, match="NaN or infinity"):
            engine.start(w, math.nan)
        out = engine.run(w, 1.0)
        assert "step 'floats'" in out[0] and "step 'typed'" in out[1]  # a typed error naming each step
    pickled = durably.Engine(str(tmp_path / "p.db"), codec="pickle")

    @pickled.step(name="floats")
    def pfloats() -> list:
        return [math.nan, math.inf, -math.inf]

    @pickled.workflow(name="pw")
    def pw() -> list:
        return pfloats()

    with pickled:
        got = pickled.run(pw)
        assert math.isnan(got[0]) and got[1:] == [math.inf, -math.inf]
