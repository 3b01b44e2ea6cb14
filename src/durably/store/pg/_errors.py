"""Map psycopg exception *types* (never message text) to durably's errors."""

from __future__ import annotations

import psycopg
from psycopg import errors as pge

from ... import errors

# A record's own fault: the statement failed, the batch is applied again
# with every record in its own SAVEPOINT so that only that record fails.
RECORD_ERRORS: tuple[type[BaseException], ...] = (
    pge.IntegrityError,
    pge.DataError,  # a value PostgreSQL cannot store (NUL in text, out of range)
    pge.ProgramLimitExceeded,
    TypeError,
    OverflowError,
    ValueError,
)

# Transient: another transaction's locks; the batch is rolled back and retried.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    pge.SerializationFailure,
    pge.DeadlockDetected,
    pge.LockNotAvailable,
)

# The connection is gone (server restart, pg_terminate_backend, network):
# reconnect, find out whether the batch committed, and go on.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
)

_BY_TYPE: dict[type[BaseException], type[errors.StorageError]] = {
    pge.IntegrityError: errors.ConstraintError,
    pge.DataError: errors.ValueTooLargeError,
    pge.ProgramLimitExceeded: errors.ValueTooLargeError,
    pge.DiskFull: errors.DiskFullError,
    pge.IoError: errors.DiskIOError,
    pge.DataCorrupted: errors.DatabaseCorruptError,
    pge.IndexCorrupted: errors.DatabaseCorruptError,
    pge.InsufficientPrivilege: errors.CantOpenError,
    pge.ReadOnlySqlTransaction: errors.ReadOnlyError,
    psycopg.OperationalError: errors.DatabaseUnavailableError,
    psycopg.InterfaceError: errors.DatabaseUnavailableError,
}


def map_error(exc: BaseException, path: str) -> errors.DurablyError:
    """The durably error for a psycopg (or binding) exception."""
    state = getattr(exc, "sqlstate", None) or ""
    if state.startswith("42") and state != "42501":  # SQLSTATE class 42: the SQL is wrong (not a privilege)
        err: errors.DurablyError = errors.InvalidSQLError(f"{exc}")
        err.__cause__ = exc
        return err
    target: type[errors.StorageError] = errors.StorageError
    if isinstance(exc, (TypeError, OverflowError, ValueError)):
        target = errors.ValueTooLargeError
    else:
        for kind in type(exc).__mro__:
            if kind in _BY_TYPE:
                target = _BY_TYPE[kind]
                break
    err = target(f"{type(exc).__name__}: {exc} (database {path!r})", path=path)
    err.__cause__ = exc
    return err


def fatal(exc: BaseException) -> bool:
    return isinstance(
        exc,
        (
            psycopg.errors.DiskFull,
            psycopg.errors.IoError,
            psycopg.errors.DataCorrupted,
            psycopg.errors.IndexCorrupted,
            psycopg.errors.InternalError_,
        ),
    )
