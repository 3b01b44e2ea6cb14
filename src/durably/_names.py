"""The one rule for names and ids (workflow ids, topics, event keys, queue,
dedup and schedule names, workflow and step names), checked at the API so a
bad one never reaches the writer.

A name is a non-empty ``str`` of at most ``MAX_NAME`` characters that is
valid Unicode text (no lone surrogates, which cannot be stored as UTF-8:
``os.listdir`` returns them for non-UTF-8 file names) and holds no control
character (C0, DEL, C1; NUL included), which SQLite tools and terminals
treat specially. Anything else raises :class:`InvalidNameError`.

Also here: the default name of a workflow or step (``module_name``,
``default_name``), which must not depend on how its module was loaded.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from collections.abc import Callable
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
        found = _BAD.search(value)
        bad = found.group() if found is not None else "?"  # the pattern's match: the first bad character
        kind = "a lone surrogate (not valid Unicode text)" if "\ud800" <= bad <= "\udfff" else "a control character"
        why = f"holds {kind}, {bad!r}"
    shown = (
        repr(value[:80]) + ("..." if isinstance(value, str) and len(value) > 80 else "")
        if isinstance(value, str)
        else repr(value)[:80]
    )
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
            "use another separator (e.g. 'order-0' or 'order/n0')",
            what=what,
        )
    return wid


# -- default names: module.qualname, the same however the module was loaded --------

# A ``__main__`` script's file -> the name Python gives it when imported.
_SCRIPTS: dict[str, str] = {}


def module_name(fn: Callable[..., Any]) -> str:
    """The import name of the module defining ``fn``: ``fn.__module__``,
    except that ``__main__`` (a script run as ``python app.py`` or
    ``python -m app``) is resolved to the name the same file has when it is
    imported (``app``), so a workflow is recorded under one name whether its
    module ran as a script or was imported by a worker, a test or the CLI.

    The module is the one whose globals ``fn`` has (the ``__main__`` module,
    or the namespace ``runpy``, ``cProfile`` or ``coverage`` run a script
    in): its ``__spec__.name`` when set (``python -m``), else its
    ``__file__``'s stem, prefixed by the parent directories that hold an
    ``__init__.py`` (``pkg/sub/app.py`` -> ``pkg.sub.app``). With neither (an
    interactive session, a notebook) it stays ``__main__``.
    """
    module = getattr(fn, "__module__", None)
    if module != "__main__":
        return str(module)
    glob = getattr(inspect.unwrap(fn), "__globals__", None)
    if glob is None or glob.get("__name__") != "__main__":
        main = sys.modules.get("__main__")
        glob = vars(main) if main is not None else {}
    spec = glob.get("__spec__")
    name = getattr(spec, "name", None)
    if isinstance(name, str) and name and name != "__main__":
        return name  # python -m app (a zipapp or a directory run has "__main__": use its file)
    file = glob.get("__file__")
    if not isinstance(file, str) or not file:
        return "__main__"
    resolved = _SCRIPTS.get(file)
    if resolved is None:
        path = os.path.abspath(file)
        parts = [os.path.splitext(os.path.basename(path))[0]]
        folder = os.path.dirname(path)
        while os.path.isfile(os.path.join(folder, "__init__.py")):
            parts.append(os.path.basename(folder))
            parent = os.path.dirname(folder)
            if parent == folder:
                break
            folder = parent
        resolved = _SCRIPTS[file] = ".".join(reversed(parts))
    return resolved


def default_name(fn: Callable[..., Any]) -> tuple[str, str | None]:
    """``fn``'s default workflow or step name, ``module.qualname`` with the
    module resolved by :func:`module_name`, and the name durably recorded for
    it before that resolution existed (``__main__.qualname``) when it
    differs: an implicit alias, so databases written then are adopted."""
    qualname = fn.__qualname__
    module = module_name(fn)
    old = f"__main__.{qualname}" if fn.__module__ == "__main__" and module != "__main__" else None
    return f"{module}.{qualname}", old
