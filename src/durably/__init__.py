"""durably: embedded durable workflows for Python on one SQLite file.

Decorate functions as workflows and steps; every step outcome is journaled in
SQLite (through apsw) by a group-committing writer, so workflows survive
crashes, restarts and power loss and resume where they stopped.
"""

from __future__ import annotations

from . import errors as _errors
from .clock import Clock, SystemClock, VirtualClock
from .engine import Engine
from .errors import *  # noqa: F403 - the whole hierarchy is public
from .handle import Status, StepInfo, WorkflowHandle, WorkflowInfo
from .journal import IMPLEMENTATION
from .operations.backup import BackupReport
from .operations.copy import CopyReport
from .queues import Queue
from .registry import DeclaredQueue, DeclaredStep, DeclaredTransaction, DeclaredWorkflow, Registry
from .runtime.coordination import RecoveryReport
from .runtime.retention import GcReport
from .runtime.steps import Step
from .runtime.transactions import Transaction
from .runtime.workflows import Workflow
from .schedules import ScheduleInfo
from .store import Tx
from .store._inspect import Stats

__version__ = "0.1.0"

__all__ = [
    "Engine",
    "Registry",
    "DeclaredWorkflow",
    "DeclaredStep",
    "DeclaredTransaction",
    "DeclaredQueue",
    "Queue",
    "ScheduleInfo",
    "Clock",
    "SystemClock",
    "VirtualClock",
    "RecoveryReport",
    "Tx",
    "Workflow",
    "Step",
    "Transaction",
    "Stats",
    "CopyReport",
    "GcReport",
    "Status",
    "StepInfo",
    "WorkflowHandle",
    "WorkflowInfo",
    "IMPLEMENTATION",
    "BackupReport",
]
__all__ += _errors.__all__  # the whole hierarchy is public
