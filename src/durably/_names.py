"""The one rule for names and ids (workflow ids, topics, event keys, queue,
dedup and schedule names, workflow and step names), checked at the API so a
bad one never reaches the writer.

A name is a non-empty ``str`` of at most ``MAX_NAME`` characters that is
valid Unicode text (no lone surrogates, which cannot be stored as UTF-8:
``os.listdir`` returns them for non-UTF-8 file names) and holds no control
character (C0, DEL, C1; NUL included), which SQLite tools and terminals
treat specially. Anything else raises :class:`InvalidNameError`.
"""

from __future__ import annotations

import re
from typing import Any

from . import errors

MAX_NAME = 4096
_BAD = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def check_name(value: Any, what: str) -> str:
    """Return ``value`` if it is a valid name, else raise InvalidNameError."""
    if isinstance(value, str) and 0 < len(value) <= MAX_NAME and _BAD.search(value) is None:
        return str(value)
    if not isinstance(value, str):
        why = f"must be a str, not {type(value).__name__}"
    elif not value:
        why = "must not be empty"
    elif len(value) > MAX_NAME:
        why = f"is {len(value)} characters long, more than {MAX_NAME}"
    else:
        bad = _BAD.search(value).group()  # type: ignore[union-attr]
        kind = "a lone surrogate (not valid Unicode text)" if "\ud800" <= bad <= "\udfff" else "a control character"
        why = f"holds {kind}, {bad!r}"
    shown = repr(value[:80]) + ("..." if isinstance(value, str) and len(value) > 80 else "") \
        if isinstance(value, str) else repr(value)[:80]
    raise errors.InvalidNameError(f"{what} {shown} {why}", what=what)


def check_optional(value: Any, what: str) -> str | None:
    return None if value is None else check_name(value, what)


# The ids durably generates for children: "<parent>/<index>" and
# "<parent>/<branch>#<index>". A user-chosen id of that shape could be the id
# of another workflow's child (the parent would get that workflow's result),
# so it is reserved.
_CHILD_SHAPE = re.compile(r"/(\d+|\d+(\.\d+)*#\d+)$")


def check_workflow_id(value: Any, what: str = "workflow_id") -> str:
    """A user-chosen workflow id: a name, and not in the child-id namespace."""
    wid = check_name(value, what)
    if _CHILD_SHAPE.search(wid):
        raise errors.InvalidNameError(
            f"{what} {wid[:80]!r} ends like the id durably gives a child workflow ('<parent>/<n>' or "
            "'<parent>/<branch>#<n>'), which is reserved so that a child can never be another workflow; "
            "use another separator (e.g. 'order-0' or 'order/n0')", what=what)
    return wid
