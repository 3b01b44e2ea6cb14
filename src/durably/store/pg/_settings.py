"""The PostgreSQL store's settings, its URL (durably's own query
parameters, the password kept out of messages) and the statements only
PostgreSQL runs (the shared ones are in store/_queries.py)."""

from __future__ import annotations

import hashlib
import re
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ... import errors
from .._queries import PG_NOW as NOW
from .._queries import POSTGRES

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
TX_LOSSES = 3  # a transaction step whose SQL lost the connection this many times in one batch fails
RECONNECT = 60.0  # seconds the writer keeps reconnecting before it fails
CONNECT_TIMEOUT = 10  # seconds a connection attempt may take (libpq's connect_timeout) unless the URL says
IDLE_IN_TX = 2.0  # seconds a writer may sit idle inside a batch's transaction (a transaction step: its budget more)
_BACKOFF_MAX = 2.0
# A step row's times come from one clock, the server's: ``recorded_at`` is
# clock_timestamp() at the insert, ``started_at`` that minus the time since
# the body started (the record's monotonic ``started`` and ``at``, the
# monotonic time the statement was bound; NULL stays NULL): a host whose
# clock is off never writes a step that ends before it starts.
_STARTED: Final = f"{NOW} + (%s::float8 - %s::float8)"
_INSERT_STEP = POSTGRES.insert_step
_COMPLETE = POSTGRES.complete
_INSERT_WORKFLOW = POSTGRES.insert_workflow
WRITES = POSTGRES.writes
# The fence: the takeovers count, read with a row lock inside the batch's
# transaction. READ COMMITTED returns the latest committed version to a
# locking read, and the lock holds until this transaction ends: no change of
# owner (its trigger updates that row) commits between the check and the
# commit. Claims take it exclusive before touching any workflow row.
_FENCE: Final = "SELECT value FROM engine_state WHERE key = 'takeovers' FOR SHARE"
_FENCE_EXCLUSIVE: Final = "SELECT value FROM engine_state WHERE key = 'takeovers' FOR UPDATE"
_MARK: Final = (
    "INSERT INTO engine_state (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_LONE_STEP: Final = (
    "INSERT INTO steps (workflow_id, position, name, output, error, ident, started_at)"
    f" SELECT %s, %s, %s, %s, %s, %s, {_STARTED}"
    " WHERE (SELECT value FROM engine_state WHERE key = 'takeovers' FOR SHARE) = %s"
)


def is_url(path: Any) -> bool:
    return isinstance(path, str) and path.startswith(("postgresql://", "postgres://"))


_OURS = ("schema", "listen", "tx_role")


def _split_ours(url: str) -> tuple[str, dict[str, str]]:
    """Take durably's own query parameters out of the URL (the rest is
    libpq's): ``postgresql://host/db?schema=app1&listen=off&tx_role=app1_steps``."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL" (postgresql://[::1)
        raise errors.UsageError(f"not a valid PostgreSQL URL: {redact(url)!r} ({exc})") from None
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in _OURS}
    if not ours:
        return url, {}
    # quote, not quote_plus: libpq decodes %20 but reads "+" as itself (two
    # options=-c... joined by a space would reach the server as one bad one).
    rest = urlencode([(k, v) for k, v in query if k not in _OURS], quote_via=quote)
    return urlunsplit(parts._replace(query=rest)), ours


def redact(url: str) -> str:
    """The URL without its password (it appears in error messages)."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


def lock_key(what: str) -> int:
    """A stable signed 64-bit advisory lock key."""
    return int.from_bytes(hashlib.blake2b(what.encode(), digest_size=8).digest(), "big", signed=True)


def options(
    url: str, synchronous: str, schema: str | None, listen: bool, tx_role: str | None
) -> tuple[str, str, bool, str]:
    """PgStore's options checked, with durably's own URL parameters (schema, listen, tx_role)
    taken out of the URL: (url, schema, listen, tx_role)."""
    url, ours = _split_ours(url)
    in_url = ours.get("schema")
    if "listen" in ours:  # off: the polling fallback (docs/guides/postgresql.md)
        if ours["listen"] not in ("on", "off"):
            raise errors.UsageError(f"listen= must be 'on' or 'off', not {ours['listen']!r}")
        listen = ours["listen"] == "on"
    if schema is not None and in_url is not None and schema != in_url:
        raise errors.UsageError(f"two schemas given: {in_url!r} in the URL and schema={schema!r}")
    schema = schema if schema is not None else in_url if in_url is not None else "durably"
    if synchronous not in ("full", "normal"):
        raise errors.UsageError(f"synchronous must be 'full' or 'normal', not {synchronous!r}")
    if not isinstance(schema, str) or not _SCHEMA_NAME.match(schema):
        raise errors.UsageError(f"schema must be a lower-case SQL identifier (letters, digits, _), not {schema!r}")
    tx_role = ours.get("tx_role", tx_role) or default_role(schema)
    if not _ROLE_NAME.match(tx_role):
        raise errors.UsageError(f"tx_role must be a lower-case SQL identifier (letters, digits, _), not {tx_role!r}")
    return url, schema, listen, tx_role


def default_role(schema: str) -> str:
    """The role transaction steps run as, unless the URL names one (tx_role=)."""
    return f"durably_user_{schema}"
