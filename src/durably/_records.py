"""Kinds of journal records and what their ``params`` hold.

Shared by the runtime (which builds records), both journal implementations
(which only move them) and the store (which writes them).
"""

from __future__ import annotations

# A step outcome: (workflow_id, position, name, output, error, ident,
# started); ident is None in sync workflows (see runtime/context.py),
# started is when a step body started on this process's monotonic clock (or
# None): the store writes ``started_at`` as its own clock at the insert
# (``recorded_at``) minus the time since then, so a step row's two times
# come from one clock. Below,
# "row" is the pair (position, ident) of the step row a record writes.
STEP = 0
# A workflow start: (workflow_id, name, inputs, parent_id, parent_step[, deadline]), where
# parent_step is None or the parent's step row (workflow_id, row, name,
# output) written atomically with the child. Result: None when created, else
# the existing (name, status).
START = 1
# A workflow end: (status, output, error, workflow_id); applies only while PENDING.
COMPLETE = 2
# A transaction step: (workflow_id, row, name, body), body(Tx) returning
# (output, error); runs inside the batch in its own SAVEPOINT.
TX = 3
# A named write (store/_writes.py): (name, params). Result: rows changed.
WRITE = 4
# A toolkit operation (send, receive, set/get event, enqueue ...):
# (workflow_id, row, name, op, args). ``op`` names a function of
# ``store/_ops.py`` run inside the batch in its own SAVEPOINT; its output is
# recorded as the step's outcome at (workflow_id, row) in the same
# transaction (workflow_id None: nothing recorded, a client call). An op
# returning ``NOTHING`` records no step (e.g. a receive that found no message).
OP = 5
NOTHING = "durably:nothing"  # an OP result: nothing was recorded (compared by identity)
