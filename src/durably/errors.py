"""durably's exceptions.

One root, :class:`DurablyError`, with branches by who must act:

* :class:`UsageError` - the caller misused the API or passed bad input;
  fix the calling code.
* :class:`StorageError` - the environment failed (disk full, I/O error, a
  corrupt or foreign file, a newer schema); fix the machine or the file.
* :class:`InternalError` - a broken invariant inside durably; report a bug.

Outcomes of workflows (:class:`WorkflowFailedError`,
:class:`WorkflowCancelledError`) and replay checks
(:class:`NonDeterminismError`) sit directly under the root.

Data is carried as attributes and every exception pickles with them.
The cancellation *signal* raised inside workflow code,
:class:`WorkflowCancelled`, is a :class:`BaseException` outside the root so
that user code's ``except Exception`` cannot swallow it by accident.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DurablyError",
    "UsageError",
    "NotOpenError",
    "UnboundError",
    "InvalidNameError",
    "WorkflowNotFoundError",
    "ScheduleNotFoundError",
    "WorkflowConflictError",
    "BackupDestinationError",
    "UnknownWorkflowError",
    "SerializationError",
    "InvalidSQLError",
    "DestinationNotEmptyError",
    "DatabaseInUseError",
    "ResultTimeoutError",
    "NonDeterminismError",
    "WorkflowFailedError",
    "WorkflowCancelledError",
    "WorkflowParkedError",
    "FencedError",
    "MaxRecoveryAttemptsExceededError",
    "StepTimeoutError",
    "TransactionTimeoutError",
    "WorkflowInterruptedError",
    "StepFailedError",
    "StorageError",
    "SchemaVersionError",
    "NotADatabaseError",
    "DatabaseCorruptError",
    "WalMissingError",
    "CodecMismatchError",
    "DiskFullError",
    "DiskIOError",
    "DatabaseBusyError",
    "CantOpenError",
    "ReadOnlyError",
    "ConstraintError",
    "ValueTooLargeError",
    "JournalStoppedError",
    "DatabaseUnavailableError",
    "TxRoleError",
    "InternalError",
    "WorkflowCancelled",
]


class DurablyError(Exception):
    """Root of every error durably raises.

    Subclasses list their data fields in ``_fields``; each is stored as an
    attribute and carried through pickling.
    """

    _fields: tuple[str, ...] = ()

    def __init__(self, message: str = "", **data: Any) -> None:
        super().__init__(message)
        self.message = message
        for name in self._fields:
            setattr(self, name, data.pop(name, None))
        if data:
            raise TypeError(f"unexpected fields for {type(self).__name__}: {sorted(data)}")

    def __reduce__(self) -> Any:
        data = {name: getattr(self, name, None) for name in self._fields}
        return (_rebuild, (type(self), self.message, data))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[DurablyError], message: str, data: dict[str, Any]) -> DurablyError:
    return cls(message, **data)


# -- caller misuse -------------------------------------------------------------


class UsageError(DurablyError):
    """The API was called wrongly or given bad input."""


class NotOpenError(UsageError):
    """The engine is not open (use ``with engine:`` or ``engine.open()``)."""


class UnboundError(UsageError):
    """A workflow, step or queue declared on a ``durably.Registry`` was used
    where no engine it is bound to runs: called outside a workflow with its
    registry bound to no engine, started on an engine that does not include
    its registry, or called from a workflow of such an engine."""

    _fields = ("what",)


class InvalidNameError(UsageError):
    """A name or id is not valid text for durably: not a str, empty, longer
    than 4,096 characters, or holding a lone surrogate (``os.listdir`` gives
    those for non-UTF-8 file names) or a control character (NUL included).
    Nothing was written."""

    _fields = ("what",)


class WorkflowNotFoundError(UsageError):
    """No workflow with this id exists in the database."""

    _fields = ("workflow_id",)


class ScheduleNotFoundError(UsageError):
    """No schedule with this name exists in the database (``pause_schedule``,
    ``resume_schedule``, ``delete_schedule``, ``trigger_schedule``,
    ``backfill_schedule``)."""

    _fields = ("name",)


class BackupDestinationError(UsageError):
    """A backup (or copy) cannot be written there: the destination exists
    (or a -wal, -shm or -journal file beside it), its folder does not, or
    it is the source itself. Nothing was written."""

    _fields = ("path",)


class WorkflowConflictError(UsageError):
    """A workflow id was reused for a different workflow function."""

    _fields = ("workflow_id", "existing_name", "requested_name")


class UnknownWorkflowError(UsageError):
    """A workflow name in the database has no registered function."""

    _fields = ("workflow_id", "name")


class SerializationError(UsageError):
    """A value could not be encoded or decoded by the engine's codec."""

    _fields = ("where", "type_name")


class InvalidSQLError(UsageError):
    """SQL in a transaction step failed to compile or run (syntax, no such table)."""


class DestinationNotEmptyError(UsageError):
    """``durably copy``: the destination already exists or holds durably
    data; nothing was written."""

    _fields = ("path",)


class DatabaseInUseError(UsageError):
    """``durably copy``: a live engine (executor) has the database open;
    nothing was written."""

    _fields = ("path",)


class ResultTimeoutError(DurablyError, TimeoutError):
    """``result(timeout=...)`` expired; the workflow keeps running."""

    _fields = ("workflow_id", "timeout")


# -- outcomes and replay -------------------------------------------------------


class NonDeterminismError(DurablyError):
    """Replayed code called a different step at a recorded position.

    The workflow is parked (stays PENDING with this reason) and can be
    resumed with ``engine.resume(id)`` once the code matches its journal.
    """

    _fields = ("workflow_id", "position", "recorded", "called")


class WorkflowFailedError(DurablyError):
    """The workflow ended in ERROR; ``error`` is the workflow's exception."""

    _fields = ("workflow_id", "error")


class WorkflowCancelledError(DurablyError):
    """The workflow was cancelled before it finished."""

    _fields = ("workflow_id",)


class WorkflowParkedError(DurablyError):
    """``result()`` on a parked workflow: replay found code that does not
    match its journal (or its function is not registered). It stays PENDING
    and resumable; ``reason`` says why (``handle.info().parked`` too)."""

    _fields = ("workflow_id", "reason")


class FencedError(DurablyError):
    """A record for a workflow this process no longer owns: another executor
    took it over (this one lost its lease, e.g. it was paused past it). The
    record is not written; this process abandons the workflow, its new owner
    runs it."""

    _fields = ("workflow_id",)


class MaxRecoveryAttemptsExceededError(DurablyError):
    """``result()`` on a workflow that was found running at more opens than
    its ``max_recovery_attempts`` (its process died at every attempt): it is
    in the terminal MAX_RECOVERY_ATTEMPTS_EXCEEDED state instead of being run
    forever; ``engine.resume`` runs it again."""

    _fields = ("workflow_id", "attempts")


class StepTimeoutError(DurablyError, TimeoutError):
    """An async step's body ran past its ``timeout``: it was cancelled, and
    this is its recorded outcome (its retry policy applies first)."""

    _fields = ("step", "timeout")


class TransactionTimeoutError(DurablyError, TimeoutError):
    """A transaction step's SQL ran past its time budget (or its workflow was
    cancelled, or the engine closed, while it ran): SQLite interrupted it,
    its SQL is undone, and this is its recorded outcome."""

    _fields = ("step", "timeout")


class WorkflowInterruptedError(DurablyError):
    """``result()`` on a workflow whose code raised KeyboardInterrupt or
    SystemExit in this process: it stopped without an outcome, stays PENDING,
    and resumes at the next open (or now, with ``engine.resume``)."""

    _fields = ("workflow_id", "cause")


class StepFailedError(DurablyError):
    """A recorded step error whose original type cannot be rebuilt here."""

    _fields = ("type_name", "args")


# -- environment and storage ---------------------------------------------------


class StorageError(DurablyError):
    """The database or the disk under it failed."""

    _fields: tuple[str, ...] = ("path",)


class SchemaVersionError(StorageError):
    """The database was written by a newer durably, or is not a durably file."""

    _fields = ("path", "found", "supported")


class NotADatabaseError(StorageError):
    """The file is not an SQLite database."""


class DatabaseCorruptError(StorageError):
    """SQLite reports the database image is malformed."""


class WalMissingError(DatabaseCorruptError):
    """The -wal file of a database that was not closed cleanly is gone:
    committed transactions it held would be silently lost, so durably refuses."""


class CodecMismatchError(StorageError):
    """The database was written with another values codec (``codec=``) than
    the engine opening it: refused at open, nothing read or written."""

    _fields = ("path", "stored", "requested")


class DiskFullError(StorageError):
    """The disk (or a size limit) is full."""


class DiskIOError(StorageError):
    """A read, write or fsync failed. The writer stops; reopen the engine."""


class DatabaseBusyError(StorageError):
    """Another connection held a lock past ``busy_timeout``."""


class CantOpenError(StorageError):
    """The database path cannot be opened (a directory, missing parent, permissions)."""


class ReadOnlyError(StorageError):
    """The database or its directory is read-only."""


class ConstraintError(StorageError):
    """A record violated a constraint; only that record failed."""


class ValueTooLargeError(StorageError):
    """A value exceeded SQLite's size limits; only that record failed."""


class DatabaseUnavailableError(StorageError):
    """The PostgreSQL server could not be reached (refused, restarting, the
    connection lost) for longer than the engine waits (``reconnect=``);
    nothing unacknowledged is assumed written."""


class TxRoleError(StorageError):
    """PostgreSQL: the role transaction steps run as (``role``) is missing
    and cannot be created, cannot be switched to, or could reach durably's
    schema; transaction steps are refused rather than run unsandboxed. The
    message names the setup an operator runs (docs/guides/postgresql.md)."""

    _fields = ("path", "role")


class JournalStoppedError(StorageError):
    """The journal writer stopped after a fatal error; reopen the engine."""

    _fields = ("path", "cause")


# -- broken invariants ---------------------------------------------------------


class InternalError(DurablyError):
    """A broken invariant inside durably. Please report it."""


# -- control-flow signal (outside the root on purpose) ------------------------


class WorkflowCancelled(BaseException):
    """Raised inside a cancelled workflow at its next durable point.

    A ``BaseException`` so that ``except Exception`` in workflow code does not
    swallow it; durably catches it and leaves the workflow CANCELLED.
    """

    def __init__(self, workflow_id: str = "") -> None:
        super().__init__(workflow_id)
        self.workflow_id = workflow_id
