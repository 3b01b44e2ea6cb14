"""Map apsw exception *types* (never message text) to durably's storage errors."""

from __future__ import annotations

import apsw

from .. import errors

# Order matters only for subclasses; apsw's are flat under apsw.Error.
_BY_TYPE: dict[type[BaseException], type[errors.DurablyError]] = {
    apsw.NotADBError: errors.NotADatabaseError,
    apsw.CorruptError: errors.DatabaseCorruptError,
    apsw.FullError: errors.DiskFullError,
    apsw.IOError: errors.DiskIOError,
    apsw.BusyError: errors.DatabaseBusyError,
    apsw.LockedError: errors.DatabaseBusyError,
    apsw.CantOpenError: errors.CantOpenError,
    apsw.PermissionsError: errors.CantOpenError,
    apsw.AuthError: errors.CantOpenError,
    apsw.ReadOnlyError: errors.ReadOnlyError,
    apsw.ConstraintError: errors.ConstraintError,
    apsw.TooBigError: errors.ValueTooLargeError,
    apsw.SQLError: errors.InvalidSQLError,
}

# Errors that concern one record only: the statement was rolled back by
# SQLite, the surrounding transaction is intact, the rest of the batch commits.
RECORD_ERRORS: tuple[type[BaseException], ...] = (
    apsw.ConstraintError,
    apsw.TooBigError,
    apsw.MismatchError,
    apsw.RangeError,
    apsw.BindingsError,  # a record with the wrong number of values: that record's bug
    TypeError,
    OverflowError,
    ValueError,  # UnicodeEncodeError: a lone surrogate in a bound str
)

# Another connection (a second process, a `sqlite3` shell) holds the lock:
# transient, waited out; never a reason to stop the writer.
BUSY_ERRORS: tuple[type[BaseException], ...] = (apsw.BusyError, apsw.LockedError)


# Errors after which the connection must not be trusted again: the batch fails
# and the writer stops (a failed fsync is never retried on the same connection).
FATAL_ERRORS: tuple[type[BaseException], ...] = (
    apsw.IOError,
    apsw.FullError,
    apsw.CorruptError,
    apsw.NotADBError,
    apsw.CantOpenError,
    apsw.ReadOnlyError,
    apsw.NoMemError,
    apsw.InternalError,
    apsw.ProtocolError,
)


def map_error(exc: BaseException, path: str) -> errors.DurablyError:
    """Return the durably error for an apsw (or binding) exception."""
    for kind in type(exc).__mro__:
        target = _BY_TYPE.get(kind)
        if target is not None:
            break
    else:
        target = errors.StorageError
    if target is errors.InvalidSQLError:
        err: errors.DurablyError = errors.InvalidSQLError(f"{exc}")
        err.__cause__ = exc
        return err
    err = target(f"{type(exc).__name__}: {exc} (database {path!r})", path=path)
    err.__cause__ = exc
    return err
