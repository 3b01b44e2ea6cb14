"""What every command shares: opening the database (a read-only store for
reads, a client-mode Engine for writes), refusing bad input in one line,
escaping stored text for the terminal, and turning rows into the JSON
documents and tables the commands print (field names: ``cli/__init__.py``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Generator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn, cast
from urllib.parse import parse_qsl, urlsplit

import click

from ..errors import CodecMismatchError, DurablyError, UsageError
from ..store import is_postgres

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from .. import Engine
    from ..handle import StepInfo
    from ..schedules import ScheduleInfo
    from ..store.contract import StoreContract, WorkflowView

CONNECT_TIMEOUT = 5  # seconds the CLI waits for a PostgreSQL server, unless the URL sets connect_timeout
BAD_INPUT, FAILED = 2, 1  # exit codes (0: done)


class Refused(Exception):
    """Ends a command: one line on stderr, exit ``code``."""

    def __init__(self, message: str, code: int = BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def refuse(message: str, code: int = BAD_INPUT) -> NoReturn:
    raise Refused(message, code)


def code_of(exc: DurablyError) -> int:
    """Bad input (an unknown id or name, a refused argument: UsageError) is
    2; anything else that went wrong while the operation ran is 1."""
    return BAD_INPUT if isinstance(exc, UsageError) else FAILED


def shown(value: Any) -> str:
    """``value`` as text for a terminal: control characters (C0, DEL, C1)
    and lone surrogates escaped as ``\\xNN``/``\\uNNNN``."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    out: list[str] = []
    for ch in text:
        if ch.isprintable() or ch == " ":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii") if ord(ch) < 0x10000 else ch)
    return "".join(out)


def describe(what: Any) -> str:
    """An error as one line of text (a server's multi-line reason joined), escaped."""
    text = f"{type(what).__name__}: {what}" if isinstance(what, BaseException) else str(what)
    return shown(" ".join(text.split()))


def where(db: str) -> str:
    """The database as the operator gave it, without a URL's password."""
    if not is_postgres(db):
        return db
    from ..store.pg._settings import redact  # psycopg is there: the store was made

    return redact(db)


def with_timeout(url: str) -> str:
    """``url`` with the CLI's connect_timeout if it sets none (and no
    PGCONNECT_TIMEOUT does); a URL that does not parse is left to the store
    to refuse. A file path is returned as it is."""
    if not is_postgres(url):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "connect_timeout" in dict(parse_qsl(parts.query)) or "PGCONNECT_TIMEOUT" in os.environ:
        return url
    query = f"{parts.query}&" if parts.query else ""
    return parts._replace(query=f"{query}connect_timeout={CONNECT_TIMEOUT}").geturl()


# -- opening ------------------------------------------------------------------------------


@contextlib.contextmanager
def reader(db: str) -> Generator[StoreContract]:
    """The database opened for reading only: nothing written, migrated or
    recovered, no -wal/-shm left behind (an engine may be running on it)."""
    from ..store import make_store

    try:
        store = make_store(with_timeout(db))
        store.open_readonly()
    except DurablyError as exc:  # no such file, not a durably database, a URL that does not parse or answer
        refuse(describe(exc))
    try:
        yield store
    finally:
        store.close(clean=False)


@contextlib.contextmanager
def client(db: str) -> Generator[Engine]:
    """A client-mode Engine on the database (writes are journaled, fenced
    and wake the owning process, as any client's), after a read-only open
    has checked that it is a durably database: a write never creates one."""
    from .. import Engine

    with reader(db):
        pass
    engine = Engine(with_timeout(db), client=True)
    try:
        try:
            engine.open()
        except CodecMismatchError as exc:  # the database's own codec: the client encodes with it
            engine = Engine(with_timeout(db), client=True, codec=str(getattr(exc, "stored", "json")))
            engine.open()
    except DurablyError as exc:
        refuse(describe(exc))
    try:
        yield engine
    finally:
        engine.close()


def no_workflow(workflow_id: str, db: str) -> NoReturn:
    refuse(f"no workflow with id {shown(workflow_id)!r} in {where(db)}")


# -- values and times -------------------------------------------------------------------------


def stored_value(raw: Any) -> Any:
    """A stored value as JSON: the JSON codec's text parsed; the pickle
    codec's bytes as ``{"pickle": "<base64>"}`` (not unpickled: the CLI
    never runs code from the database)."""
    if raw is None:
        return None
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return {"pickle": base64.b64encode(bytes(cast(bytes, raw))).decode("ascii")}
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return str(raw)


def stored_error(raw: Any) -> Any:
    """A stored exception as ``{"type": ..., "message": ...}`` (None: none)."""
    if raw is None:
        return None
    doc = stored_value(raw)
    fields = _mapping(doc)
    if fields is not None and "type" in fields:
        return {"type": fields.get("type"), "message": fields.get("message")}
    return {"type": None, "message": str(doc)}


def stored_inputs(raw: Any) -> Any:
    value = stored_value(raw)
    pair = _pair(value)
    if pair is not None:
        return {"args": pair[0], "kwargs": pair[1]}
    return value


def _mapping(value: Any) -> dict[str, Any] | None:
    """A decoded JSON object, or None."""
    return value if isinstance(value, dict) else None  # pyright: ignore[reportUnknownVariableType]  (JSON: str keys)


def _pair(value: Any) -> list[Any] | None:
    """``[args, kwargs]`` as stored inputs decode, or None."""
    return value if isinstance(value, list) and len(value) == 2 else None  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]


def workflow_doc(row: WorkflowView) -> dict[str, Any]:
    """A workflow as the JSON output gives it (values as stored)."""
    return {
        "workflow_id": row.workflow_id,
        "name": row.name,
        "status": row.status,
        "parent_id": row.parent_id,
        "parked": row.parked,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "deadline": row.deadline,
        "queue": row.queue,
        "priority": row.priority,
        "dequeued_at": row.dequeued_at,
        "recovery_attempts": row.recovery_attempts or 0,
        "executor": row.executor,
        "input": stored_inputs(row.inputs),
        "output": stored_value(row.output),
        "error": stored_error(row.error),
    }


def schedule_doc(info: ScheduleInfo) -> dict[str, Any]:
    """A schedule as the JSON document ``schedules --json`` (and the web view) give."""
    return {
        "name": info.name,
        "cron": info.cron,
        "workflow": info.workflow,
        "tz": info.tz,
        "missed": info.missed,
        "paused": info.paused,
        "last_slot": info.last_slot.isoformat(),
        "next_slot": None if info.next_slot is None else info.next_slot.isoformat(),
    }


def step_doc(step: StepInfo) -> dict[str, Any]:
    return {
        "position": step.position,
        "name": step.name,
        "output": stored_value(step.output),
        "error": stored_error(step.error),
        "started_at": step.started_at,
        "recorded_at": step.recorded_at,
    }


def when(ts: float | None) -> str:
    """A unix time for a table: UTC, to the second."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}


def seconds(text: str, what: str) -> float:
    """A duration: ``90``, ``90s``, ``15m``, ``12h``, ``7d``, ``2w``, ``250ms``."""
    found = _DURATION.match(text)
    if found is None:
        refuse(f"{what}: {shown(text)!r} is not a duration (e.g. 30s, 15m, 12h, 7d)")
    return float(found.group(1)) * _UNIT[found.group(2)]


def point_in_time(text: str, what: str) -> float:
    """A moment as unix seconds: an ISO 8601 date or time (no zone: UTC),
    a duration ago (``15m``: 15 minutes ago), or ``@<unix seconds>``."""
    text = text.strip()
    if text.startswith("@"):
        try:
            return float(text[1:])
        except ValueError:
            refuse(f"{what}: {shown(text)!r} is not @<unix seconds>")
    if _DURATION.match(text):
        return time.time() - seconds(text, what)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        refuse(f"{what}: {shown(text)!r} is neither an ISO date/time, a duration ago (15m, 7d) nor @<unix seconds>")
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()


def aware(text: str, what: str) -> datetime:
    """An ISO 8601 moment as an aware datetime (no zone: UTC)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        refuse(f"{what}: {shown(text)!r} is not an ISO 8601 date/time (e.g. 2026-01-31T09:00)")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# -- printing ---------------------------------------------------------------------------------


def compact(value: Any) -> str:
    """A JSON value on one line, for a table cell."""
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


def flush() -> None:
    sys.stdout.flush()


def emit_json(doc: Any) -> None:
    """One JSON document (or, for ``tail``, one line) on stdout."""
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, default=str) + "\n")


def console() -> Console:
    """Rich output on stdout; piped (not a terminal), no colour and no
    wrapping, so each row stays one line for grep and head."""
    from rich.console import Console

    tty = sys.stdout.isatty()
    return Console(highlight=False, soft_wrap=not tty, width=None if tty else 100_000, no_color=not tty)


def table(*columns: str) -> Table:
    from rich import box
    from rich.table import Table

    out = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for name in columns:
        out.add_column(name, overflow="fold")
    return out


def cells(*values: Any) -> list[Any]:
    """Table cells: stored text escaped, and never read as rich markup."""
    from rich.text import Text

    return [Text(shown(v)) for v in values]


def json_option(fn: Any) -> Any:
    return click.option(
        "--json", "as_json", is_flag=True, help="one JSON document on stdout (fields: docs/operations/cli.md, '--json')"
    )(fn)


DB_ARGUMENT = click.argument("db", metavar="DB")
