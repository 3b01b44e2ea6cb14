"""Steps, transaction steps and workflows as objects (issue 20, item 4).

``@engine.step`` returns a ``Step``, ``@engine.transaction`` a
``Transaction`` and ``@engine.workflow`` a ``Workflow`` instead of a wrapping
function: each still looks like the function it wraps (name, docstring,
signature, ``__wrapped__``, attributes), binds as a method, pickles by
reference, and behaves as the function did.
"""

from __future__ import annotations

import asyncio
import inspect
import pickle
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import durably
from durably import errors
from durably.runtime.steps import Step
from durably.runtime.transactions import Transaction
from durably.runtime.workflows import Workflow


def test_objects_look_like_their_functions(tmp_path: Path) -> None:
    engine = durably.Engine(str(tmp_path / "t.db"))

    def body(x: int, y: int = 2) -> int:
        """Adds."""
        return x + y

    body.tag = "kept"  # type: ignore[attr-defined]  # a user attribute, copied as functools.wraps did
    add = engine.step(name="add")(body)

    @engine.transaction(name="book")
    def book(db: durably.Tx, n: int) -> int:
        return n

    @engine.workflow(name="flow")
    def flow(n: int) -> int:
        """The flow."""
        return add(n) + book(n)

    @engine.workflow(name="aflow")
    async def aflow(n: int) -> int:
        return n

    assert isinstance(add, Step) and isinstance(book, Transaction)
    assert isinstance(flow, Workflow) and isinstance(aflow, Workflow)
    assert add.__name__ == "body" and add.__doc__ == "Adds." and add.__wrapped__ is body
    assert add.tag == "kept"  # type: ignore[attr-defined]
    assert inspect.signature(add) == inspect.signature(body)
    assert add.__durably_step__.name == "add" and book.__durably_step__.name == "book"
    assert flow.__durably_workflow__.name == "flow" and flow.__doc__ == "The flow."
    assert asyncio.iscoroutinefunction(aflow) and not asyncio.iscoroutinefunction(flow)
    assert add(1) == 3  # outside a workflow: a plain call
    with engine:
        assert flow(5) == 12
        assert asyncio.run(aflow(4)) == 4
        assert [s.name for s in engine.steps(engine.list_workflows(name="flow")[0].workflow_id)] == ["add", "book"]


def test_methods_and_keyword_named_self(tmp_path: Path) -> None:
    engine = durably.Engine(str(tmp_path / "t.db"))

    class Shop:
        def __init__(self, rate: int) -> None:
            self.rate = rate

        @engine.step(name="price")
        def price(self, n: int) -> int:
            return n * self.rate

    @engine.step(name="echo")
    def echo(**kwargs: Any) -> Any:
        return kwargs

    @engine.workflow(name="buy")
    def buy(n: int) -> Any:
        return Shop(3).price(n), echo(self=1)

    assert isinstance(Shop.__dict__["price"], Step)
    assert Shop(2).price(5) == 10
    assert echo(self=1) == {"self": 1}
    with engine:
        assert buy(4) == [12, {"self": 1}]  # (a JSON result)


def test_pickled_by_reference(tmp_path: Path) -> None:
    (tmp_path / "pickled_app.py").write_text(
        textwrap.dedent("""
            import durably
            engine = durably.Engine(":memory:")

            @engine.step
            def double(x: int) -> int:
                return 2 * x

            @engine.transaction
            def book(db: durably.Tx, x: int) -> int:
                return x

            @engine.workflow
            def flow(x: int) -> int:
                return double(x)
        """)
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import pickled_app  # type: ignore[import-not-found]

        for obj in (pickled_app.double, pickled_app.book, pickled_app.flow):
            assert pickle.loads(pickle.dumps(obj)) is obj
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("pickled_app", None)


def test_transaction_outside_a_workflow_is_refused(tmp_path: Path) -> None:
    engine = durably.Engine(str(tmp_path / "t.db"))

    @engine.transaction(name="book")
    def book(db: durably.Tx) -> None:
        return None

    with pytest.raises(errors.UsageError, match="outside a workflow"):
        book()
