"""The composition root: an Engine's arguments checked, and its parts built.

Each part is given what it uses (the store as its contract, the clock, the
identity, another part or one of its methods), never the engine; the
Engine's public methods delegate to them (durably/engine.py). Until the
first open the parts hold a journal never started (its submit raises
NotOpenError); each open starts a writer of its own and hands it to them
(runtime/lifecycle.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .. import errors
from .._names import check_name
from ..clock import Clock, SystemClock
from ..codec import Codec, get_codec
from ..journal import Journal
from ..queues import QueueManager
from ..schedules import ScheduleManager
from ..store import make_store
from ..store.contract import StoreContract
from .deadlines import Deadlines
from .identity import Identity
from .lifecycle import Lifecycle
from .management import Management
from .messaging import Messaging
from .registration import Registrations
from .retention import Retention, seconds_of
from .runner import Runner
from .starts import Starter
from .steps import StepSpec
from .toolkit import Toolkit
from .waits import Waits
from .workflows import WorkflowSpec


def positive(value: Any, what: str) -> float:
    """``value`` as seconds, UsageError unless it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise errors.UsageError(f"{what} must be a number of seconds > 0, not {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Parts:
    """An engine's parts, built once (``assemble``)."""

    store: StoreContract
    identity: Identity
    codec: Codec
    clock: Clock
    workflows: dict[str, WorkflowSpec]
    steps: dict[str, StepSpec]
    waits: Waits
    deadlines: Deadlines
    runner: Runner
    toolkit: Toolkit
    messaging: Messaging
    starts: Starter
    queues: QueueManager
    schedules: ScheduleManager
    manage: Management
    life: Lifecycle
    register: Registrations
    retention: Retention


def assemble(
    path: str,
    *,
    synchronous: str,
    codec: str,
    workers: int,
    vfs: str | None,
    check: str,
    clock: Clock | None,
    transaction_timeout: float,
    app_version: str | None,
    lease: float,
    client: bool,
    poll: float,
    schema: str | None,
    retention: timedelta | float | None = None,
    checkpoints: str = "engine",
) -> Parts:
    """Check ``Engine``'s arguments (UsageError) and build its parts."""
    if workers < 1:
        raise errors.UsageError(f"workers must be >= 1, not {workers}")
    # The one place the store enters the runtime: typed as the contract
    # from here on (store/contract.py), whichever backend it is.
    store = make_store(path, synchronous, vfs, check, schema, checkpoints)
    store.tx_budget = positive(transaction_timeout, "transaction_timeout")
    version = app_version if app_version is not None else os.environ.get("DURABLY_APP_VERSION", "0")
    store.app_version = check_name(version, "app_version")
    identity = Identity(store.app_version, bool(client))
    identity.renew(store)
    lease, poll = positive(lease, "lease"), positive(poll, "poll")
    keep = None if retention is None else seconds_of(retention, "retention", zero=False)
    if keep is not None and client:
        raise errors.UsageError(
            "retention runs on the engines that run workflows; a client engine (client=True) deletes "
            "on demand with engine.gc(older_than=...)"
        )
    chosen = get_codec(codec)
    if clock is not None and not isinstance(clock, Clock):
        raise errors.UsageError(f"clock must be a durably clock (e.g. durably.VirtualClock()), not {clock!r}")
    # An engine closes the clock it made (its timer thread), never a given one.
    own_clock: SystemClock | None = None
    if clock is None:
        clock = own_clock = SystemClock()
    return _build(workers, identity, store, chosen, clock, own_clock, lease, poll, keep)


def _build(
    workers: int,
    identity: Identity,
    store: StoreContract,
    codec: Codec,
    clock: Clock,
    own_clock: SystemClock | None,
    lease: float,
    poll: float,
    keep: float | None,
) -> Parts:
    workflows, steps = dict[str, WorkflowSpec](), dict[str, StepSpec]()
    journal = Journal(store.flush)
    waits = Waits()
    deadlines = Deadlines(clock, lambda wid, why: manage.cancel(wid, why))
    runner = Runner(
        workers, store, workflows, codec, clock, deadlines, lambda: queues.kick(), lambda: life.check_open(), journal
    )
    kit = Toolkit(store, codec, clock, waits, runner.check_open, journal)
    starts = Starter(identity, store, codec, clock, workflows, runner, deadlines, kit, runner.check_open)
    queues = QueueManager(
        identity,
        store,
        clock,
        codec,
        runner,
        deadlines,
        starts.vet,
        lambda: life.is_open and not runner.closing,
        journal,
    )
    schedules = ScheduleManager(
        store, clock, workflows, starts.spec, starts.start, runner.check_open, lambda: life.is_open, journal
    )
    manage = Management(identity, store, codec, workflows, runner, deadlines, starts.spec, queues.kick)
    retention = Retention(clock, keep, lambda: life.check_open(), journal)
    life = Lifecycle(
        identity, store, codec.name, own_clock, runner, kit, queues, schedules, deadlines, waits, lease, poll, retention
    )
    register = Registrations(codec, workflows, steps, runner.accepted, starts.run_inline, starts.start_async)
    return Parts(
        store,
        identity,
        codec,
        clock,
        workflows,
        steps,
        waits,
        deadlines,
        runner,
        kit,
        Messaging(kit),
        starts,
        queues,
        schedules,
        manage,
        life,
        register,
        retention,
    )
