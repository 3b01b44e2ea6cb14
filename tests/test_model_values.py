"""Pydantic v2 models and attrs classes as workflow values, under the JSON
codec: encoded as JSON, decoded by annotation like dataclasses, the same
value live and on replay; a stored value that no longer fits its model is a
typed SerializationError and nothing is lost; an unencodable value's error
names the type that failed, not the container around it.

No ``from __future__ import annotations`` here: some functions are annotated
with a model passed in as a variable (the same code, with a changed model).
"""

import collections.abc
import dataclasses
import datetime
import decimal
import subprocess
import sys
import time
from typing import Any

import msgspec
import pytest

import durably
from durably import errors

pytest.importorskip("pydantic")
pytest.importorskip("attrs")
import attr
import attrs
import pydantic

# -- Pydantic models ---------------------------------------------------------------


class Address(pydantic.BaseModel):
    # strict: in Python mode it would refuse the ISO string of its own datetime
    model_config = pydantic.ConfigDict(strict=True)
    city: str
    since: datetime.datetime


class Line(pydantic.BaseModel):
    sku: str = pydantic.Field(alias="SKU")
    qty: int = 1
    price: decimal.Decimal = decimal.Decimal("0")


class Order(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    id: str
    address: Address | None = None
    lines: list[Line] = []
    by_sku: dict[str, Line] = {}
    note: str | None = None

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def count(self) -> int:
        return len(self.lines)


@dataclasses.dataclass
class Shipment:  # a dataclass holding models
    order: Order
    extra: Line | None = None


class Parcel(pydantic.BaseModel):  # a model holding a dataclass
    shipment: Shipment
    weight: float = 1.5


# The same stored shape, read by code that changed since: V2 gained a required
# field (it no longer fits), V3 gained it with a default (it fits again).
class Ticket(pydantic.BaseModel):
    id: str


class TicketV2(pydantic.BaseModel):
    id: str
    currency: str


class TicketV3(pydantic.BaseModel):
    id: str
    currency: str = "EUR"


# -- attrs classes -----------------------------------------------------------------


@attrs.define
class Point:
    x: int
    when: datetime.datetime


@attrs.define
class Route:
    name: str
    start: Point
    stops: list[Point] = attrs.Factory(list)
    end: Point | None = None
    order: Order | None = None  # an attrs class holding a model


@attr.s(auto_attribs=True)
class Legacy:
    label: str
    route: Route | None = None


class Blob(pydantic.BaseModel):
    data: bytes  # dumped as UTF-8 text in JSON mode: other bytes cannot be


@attrs.define
class Reading:
    value: float


class Thing:
    """Not JSON: neither the JSON codec nor its hooks know it."""


@dataclasses.dataclass
class Box:
    things: list[Any]


def an_order() -> Order:
    lines = [Line(SKU="a", qty=2, price=decimal.Decimal("9.99")), Line(SKU="b")]
    return Order(
        id="o-1",
        address=Address(city="Lyon", since=datetime.datetime(2020, 1, 2, 3, 4, 5)),
        lines=lines,
        by_sku={"a": lines[0]},
    )


def a_route() -> Route:
    p = Point(1, datetime.datetime(2021, 5, 6, 7, 8, 9))
    return Route("r", start=p, stops=[Point(2, p.when), Point(3, p.when)], order=an_order())


def wait_steps(engine: durably.Engine, wid: str, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(engine.steps(wid)) < n:
        assert time.monotonic() < deadline, engine.steps(wid)
        time.sleep(0.01)


# -- everywhere a value goes ---------------------------------------------------------


def test_pydantic_models_as_input_step_transaction_message_event_and_result(make_engine) -> None:
    engine = make_engine()
    seen: dict[str, Any] = {}

    @engine.step(name="ship")
    def ship(order: Order) -> Shipment:
        return Shipment(order=order, extra=order.lines[0])

    @engine.transaction(name="pack")
    def pack(db: durably.Tx, shipment: Shipment) -> Parcel:
        return Parcel(shipment=shipment)

    @engine.step(name="many")
    def many(order: Order) -> dict[str, list[Line | None]]:
        return {"lines": [*order.lines, None]}

    @engine.workflow(name="w")
    def w(order: Order, maybe: Order | None = None) -> Parcel:
        seen["input"], seen["maybe"] = order, maybe
        seen["ship"] = ship(order)
        seen["many"] = many(order)
        parcel = pack(seen["ship"])
        seen["pack"] = parcel
        engine.set_event("parcel", parcel)
        seen["msg"] = engine.recv("go", timeout=10, type=Order)
        return parcel

    order = an_order()
    with engine:
        h = engine.start(w, order, None, workflow_id="w1")
        engine.send("w1", order.model_copy(update={"note": "gift"}), topic="go")
        result = h.result(timeout=10)
        assert engine.get_event("w1", "parcel", timeout=10, type=Parcel) == result
        stored = [s.output for s in engine.steps("w1")]
    want = Parcel(shipment=Shipment(order=order, extra=order.lines[0]))
    assert type(result) is Parcel and result == want
    assert type(seen["input"]) is Order and seen["input"] == order and seen["maybe"] is None
    assert type(seen["ship"]) is Shipment and type(seen["ship"].order.address) is Address
    assert seen["ship"] == want.shipment and seen["pack"] == want
    assert seen["many"] == {"lines": [*order.lines, None]} and type(seen["many"]["lines"][0]) is Line
    assert type(seen["msg"]) is Order and seen["msg"].note == "gift"
    # JSON in the journal, readable without the code: by alias, no computed field
    doc = msgspec.json.decode(stored[0])
    assert doc["order"]["lines"][0] == {"SKU": "a", "qty": 2, "price": "9.99"} and "count" not in doc["order"]
    assert doc["order"]["address"]["since"] == "2020-01-02T03:04:05"


def test_attrs_classes_as_input_step_transaction_message_event_and_result(make_engine) -> None:
    engine = make_engine()
    seen: dict[str, Any] = {}

    @engine.step(name="plan")
    def plan(route: Route) -> Legacy:
        return Legacy("l", route)

    @engine.transaction(name="save")
    def save(db: durably.Tx, route: Route) -> list[Point]:
        return route.stops

    @engine.workflow(name="w")
    def w(route: Route) -> Legacy:
        seen["input"] = route
        seen["plan"] = plan(route)
        seen["save"] = save(route)
        engine.set_event("route", route)
        seen["msg"] = engine.recv("go", timeout=10, type=Point)
        return seen["plan"]

    route = a_route()
    with engine:
        h = engine.start(w, route, workflow_id="w1")
        engine.send("w1", Point(9, route.start.when), topic="go")
        result = h.result(timeout=10)
        assert engine.get_event("w1", "route", timeout=10, type=Route) == route
    assert type(result) is Legacy and result == Legacy("l", route)
    assert result.route is not None and type(result.route.order) is Order
    assert type(seen["input"]) is Route and seen["input"] == route
    assert seen["plan"] == result and seen["save"] == route.stops and type(seen["save"][0]) is Point
    assert seen["msg"] == Point(9, route.start.when)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_replayed_model_equals_the_live_one_after_a_restart(make_engine, kind: str) -> None:
    ran: list[str] = []
    seen: list[Any] = []

    def build(engine: durably.Engine) -> None:
        if kind == "sync":

            @engine.step(name="route")
            def step() -> Route:
                ran.append("route")
                return a_route()

            @engine.workflow(name="w")
            def w() -> str:
                value = step()
                seen.append(value)
                return engine.recv("go", timeout=3600)
        else:

            @engine.step(name="route")
            async def astep() -> Route:
                ran.append("route")
                return a_route()

            @engine.workflow(name="w")
            async def aw() -> str:
                value = await astep()
                seen.append(value)
                return await engine.recv_async("go", timeout=3600)

        @engine.step(name="order")
        def order() -> Order | None:
            return an_order()

    engine = make_engine()
    build(engine)
    with engine:
        engine.start("w", workflow_id="w1")
        wait_steps(engine, "w1", 2)  # the model step, then the recv deadline
    again = make_engine()
    build(again)
    with again:
        again.send("w1", "go", topic="go")
        assert again.handle("w1").result(timeout=10) == "go"
    assert ran == ["route"]  # recorded once, never run again
    live, replayed = seen
    assert type(live) is type(replayed) is Route and live == replayed == a_route()
    assert type(replayed.order) is Order and type(replayed.stops[0]) is Point


def test_a_stored_value_that_no_longer_fits_its_model_is_a_serialization_error_and_resumable(make_engine) -> None:
    ran: list[str] = []

    def build(engine: durably.Engine, model: type) -> None:
        # The same functions, whose annotations name ``model``.
        @engine.step(name="charge")
        def charge() -> model:  # type: ignore[valid-type]
            ran.append("charge")
            return Ticket(id="t1")

        @engine.workflow(name="by_step")
        def by_step() -> str:
            ticket: Any = charge()
            engine.recv("go", timeout=3600)
            return f"{type(ticket).__name__} {ticket.id}"

        @engine.workflow(name="by_input")
        def by_input(ticket: model) -> str:  # type: ignore[valid-type]
            engine.recv("go", timeout=3600)
            return f"{type(ticket).__name__} {ticket.id}"

        @engine.workflow(name="by_message")
        def by_message() -> str:
            try:
                return repr(engine.recv("go", timeout=3600, type=model))
            except errors.SerializationError as exc:
                return f"refused: {exc}"

    engine = make_engine()
    build(engine, Ticket)
    with engine:
        engine.start("by_step", workflow_id="s")
        engine.start("by_input", Ticket(id="t2"), workflow_id="i")
        wait_steps(engine, "s", 2)
        wait_steps(engine, "i", 1)
    changed = make_engine()
    build(changed, TicketV2)
    with changed:
        h = changed.start("by_message", workflow_id="m")
        for wid in ("s", "i", "m"):
            changed.send(wid, Ticket(id="t3"), topic="go")
        refused = h.result(timeout=10)
        failures = {}
        for wid in ("s", "i"):
            with pytest.raises(errors.WorkflowFailedError) as exc:
                changed.handle(wid).result(timeout=10)
            failures[wid] = exc.value.error
    v2 = f"{TicketV2.__module__}.TicketV2"
    assert all(type(e) is errors.SerializationError and e.type_name == v2 for e in failures.values())
    assert "step 'charge'" in str(failures["s"]) and "currency" in str(failures["s"])
    assert "workflow input 'ticket'" in str(failures["i"]) and v2 in str(failures["i"])
    assert refused.startswith("refused: message on topic 'go'") and v2 in refused
    fixed = make_engine()
    build(fixed, TicketV3)
    with fixed:  # nothing was lost: with a model that fits, they resume and finish
        assert fixed.resume("s").result(timeout=10) == "TicketV3 t1"
        assert fixed.resume("i").result(timeout=10) == "TicketV3 t2"
    assert ran == ["charge"]


def test_a_workflow_result_that_no_longer_fits_is_a_serialization_error(make_engine) -> None:
    def build(engine: durably.Engine, model: type) -> None:
        @engine.workflow(name="w")
        def w() -> model:  # type: ignore[valid-type]
            return Ticket(id="t1")

    engine = make_engine()
    build(engine, Ticket)
    with engine:
        assert engine.run("w", workflow_id="w1") == Ticket(id="t1")
    changed = make_engine()
    build(changed, TicketV2)
    with changed:
        with pytest.raises(errors.SerializationError, match="result of workflow 'w1'.*TicketV2") as exc:
            changed.handle("w1").result(timeout=10)
        assert exc.value.type_name == f"{TicketV2.__module__}.TicketV2"


def test_a_live_value_that_would_not_replay_fails_its_step_with_serialization_error(make_engine) -> None:
    engine = make_engine()

    @engine.step(name="wrong")
    def wrong() -> TicketV2:
        return Ticket(id="t1")  # type: ignore[return-value]  # what replay could not rebuild

    @engine.workflow(name="w")
    def w() -> str:
        try:
            wrong()
        except errors.SerializationError as exc:
            return str(exc)
        return "stored"

    with engine:
        out = engine.run(w, workflow_id="w1")
        assert out.startswith("step 'wrong' (workflow 'w1', position 0)") and "TicketV2" in out
        assert engine.steps("w1") == []  # its outcome was not recorded


def test_annotations_without_models_decode_as_before_once_pydantic_is_loaded(make_engine) -> None:
    """The decoding hook is only for models: ``object`` still takes anything,
    ``Hashable`` still refuses a dict (this module has imported pydantic)."""
    engine = make_engine()

    @engine.step(name="anything")
    def anything() -> object:
        return {"a": [1, "x"]}

    @engine.step(name="hashable")
    def hashable() -> collections.abc.Hashable:
        return {"a": 1}

    @engine.workflow(name="w")
    def w() -> list:
        out: list = [anything()]
        try:
            out.append(hashable())
        except errors.SerializationError as exc:
            out.append(str(exc))
        return out

    with engine:
        got, refused = engine.run(w)
    assert got == {"a": [1, "x"]}
    assert refused.startswith("step 'hashable'") and "Expected `Hashable`, got `dict`" in refused


# -- what cannot be stored ------------------------------------------------------------------


def test_an_unencodable_value_is_named_by_its_own_type_not_its_container(make_engine) -> None:
    engine = make_engine()
    thing = f"{Thing.__module__}.Thing"

    @engine.step(name="in_list")
    def in_list() -> list:
        return [1, Thing()]

    @engine.step(name="in_box")
    def in_box() -> Box:
        return Box([Thing()])

    @engine.step(name="bad_bytes")
    def bad_bytes() -> list:
        return [Line(SKU="a"), Blob(data=b"\xff")]

    @engine.workflow(name="w")
    def w(x: int) -> list:
        out = []
        for step in (in_list, in_box, bad_bytes):
            try:
                step()
            except errors.SerializationError as exc:
                out.append([exc.type_name, str(exc)])
        return out

    with engine:
        with pytest.raises(
            errors.SerializationError, match=f"inputs of workflow 'w'.*type {thing} .inside a list"
        ) as exc:
            engine.start(w, [Thing()])
        assert exc.value.type_name == thing
        (t1, m1), (t2, m2), (t3, m3) = engine.run(w, 1)
    assert t1 == t2 == thing
    assert m1.startswith("step 'in_list' (workflow") and f"type {thing} (inside a list)" in m1
    assert f"type {thing} (inside a {Box.__module__}.Box)" in m2
    assert t3 == f"{Blob.__module__}.Blob" and "pydantic could not dump" in m3 and "(inside a list)" in m3


def test_nan_in_a_model_or_attrs_class_is_refused_not_stored_as_null(make_engine) -> None:
    engine = make_engine()

    @engine.step(name="heavy")
    def heavy() -> Parcel:
        return Parcel(shipment=Shipment(order=Order(id="o")), weight=float("nan"))

    @engine.step(name="reading")
    def reading() -> list[Reading]:
        return [Reading(1.0), Reading(float("inf"))]

    @engine.workflow(name="w")
    def w() -> list:
        out = []
        for step in (heavy, reading):
            try:
                step()
                out.append("stored")
            except errors.SerializationError as exc:
                out.append(str(exc))
        return out

    with engine:
        heavy_out, reading_out = engine.run(w)
    assert heavy_out.startswith("step 'heavy'") and "NaN or infinity" in heavy_out
    assert reading_out.startswith("step 'reading'") and "NaN or infinity" in reading_out


def test_the_pickle_codec_is_unaffected(make_engine) -> None:
    engine = make_engine(codec="pickle")

    @engine.step(name="s")
    def s() -> Order:
        return an_order()

    @engine.workflow(name="w")
    def w(route: Route) -> list:
        return [s(), route]

    with engine:
        order, route = engine.run(w, a_route(), workflow_id="w1")
        assert type(order) is Order and order == an_order() and route == a_route()
        assert isinstance(engine.steps("w1")[0].output, bytes)  # pickled, not JSON


def test_durably_imports_neither_pydantic_nor_attrs() -> None:
    code = "import durably, sys; print(sorted(m for m in ('pydantic', 'attrs', 'attr') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
