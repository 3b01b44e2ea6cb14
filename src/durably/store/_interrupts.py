"""Why a transaction step was interrupted (both stores: SQLite's progress
handler and PostgreSQL's statement_timeout or cancel end it the same way)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import errors


def why_interrupted(
    store: Any, workflow_id: str, name: str, budget: float
) -> Callable[[], errors.TransactionTimeoutError]:
    """The error a transaction step's interruption becomes, decided when it
    happens: the engine closing, its workflow cancelled, or its budget spent."""

    def why() -> errors.TransactionTimeoutError:
        if store._stop_all_tx:
            reason = "the engine closed while it ran"
        elif workflow_id in store._stop_tx:
            reason = "its workflow was cancelled while it ran"
        else:
            reason = f"it ran past its time budget of {budget} s (transaction steps hold the writer)"
        return errors.TransactionTimeoutError(
            f"transaction step {name!r} was interrupted: {reason}", step=name, timeout=budget
        )

    return why
