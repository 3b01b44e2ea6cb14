"""durably: embedded durable workflows for Python on one SQLite file.

Decorate functions as workflows and steps; every step outcome is journaled in
SQLite (through apsw) by a group-committing writer, so workflows survive
crashes, restarts and power loss and resume where they stopped.
"""

from __future__ import annotations

from .engine import Engine, RecoveryReport
from .errors import (
    CantOpenError,
    ConstraintError,
    DatabaseBusyError,
    DatabaseCorruptError,
    DiskFullError,
    DiskIOError,
    DurablyError,
    InternalError,
    InvalidSQLError,
    JournalStoppedError,
    NonDeterminismError,
    NotADatabaseError,
    NotOpenError,
    ReadOnlyError,
    ResultTimeoutError,
    SchemaVersionError,
    SerializationError,
    StepFailedError,
    StorageError,
    UnknownWorkflowError,
    UsageError,
    ValueTooLargeError,
    WorkflowCancelled,
    WorkflowCancelledError,
    WorkflowConflictError,
    WorkflowFailedError,
    WorkflowNotFoundError,
)
from .handle import Status, StepInfo, WorkflowHandle, WorkflowInfo
from .journal import IMPLEMENTATION
from .store import Tx

__version__ = "0.1.0"

__all__ = [
    "Engine",
    "RecoveryReport",
    "Tx",
    "Status",
    "StepInfo",
    "WorkflowHandle",
    "WorkflowInfo",
    "IMPLEMENTATION",
    "DurablyError",
    "UsageError",
    "NotOpenError",
    "WorkflowNotFoundError",
    "WorkflowConflictError",
    "UnknownWorkflowError",
    "SerializationError",
    "InvalidSQLError",
    "ResultTimeoutError",
    "NonDeterminismError",
    "WorkflowFailedError",
    "WorkflowCancelledError",
    "StepFailedError",
    "StorageError",
    "SchemaVersionError",
    "NotADatabaseError",
    "DatabaseCorruptError",
    "DiskFullError",
    "DiskIOError",
    "DatabaseBusyError",
    "CantOpenError",
    "ReadOnlyError",
    "ConstraintError",
    "ValueTooLargeError",
    "JournalStoppedError",
    "InternalError",
    "WorkflowCancelled",
]
