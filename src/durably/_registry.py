"""The engine's registries of workflow and step names, and their aliases.

A name is recorded in the journal (a workflow's row, a step's row) and read
back by a later process: a pending workflow is run by the function
registered under its recorded name, a replayed step is checked against it.
So one name must mean one function. Workflow names and step names
(transaction steps included) are two separate namespaces; in each, a name
or alias held by another function is refused at registration, naming both
functions, instead of surfacing later as a workflow parked "not registered"
or a replay that stops with NonDeterminismError.

The same function registered again (same ``__module__`` and
``__qualname__``: a module reloaded, a notebook cell run again) replaces its
old registration silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar, cast

from . import errors
from ._names import check_name, default_name


class Spec(Protocol):
    fn: Callable[..., Any]
    name: str


S = TypeVar("S", bound=Spec)


def names_of(fn: Callable[..., Any], name: str | None, aliases: Any, what: str) -> tuple[str, tuple[str, ...]]:
    """(name, aliases) to register ``fn`` under: ``name`` or the default
    name, and the explicit aliases plus the implicit one of a ``__main__``
    function (:func:`durably._names.default_name`); every one checked."""
    if isinstance(aliases, str) or not isinstance(aliases, Iterable):
        raise errors.UsageError(
            f"{what} aliases must be a tuple of names (e.g. aliases=('old.name',)), not {aliases!r}"
        )
    extra = [check_name(a, f"{what} alias") for a in cast("Iterable[object]", aliases)]
    if not name:  # None (or "", as before): the default name
        name, old = default_name(fn)
        if old is not None:
            extra.append(old)
    name = check_name(name, f"{what} name")
    return name, tuple(dict.fromkeys(a for a in extra if a != name))


def _same(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    """The same function, possibly a new object of it (a reload, a re-run cell)."""
    if a is b:
        return True
    qualname = getattr(a, "__qualname__", None)
    return qualname is not None and (getattr(a, "__module__", None), qualname) == (
        getattr(b, "__module__", None),
        getattr(b, "__qualname__", None),
    )


def describe(fn: Callable[..., Any]) -> str:
    """``module.qualname (file:line)``: which function, and where."""
    code = getattr(fn, "__code__", None)
    where = f" ({code.co_filename}:{code.co_firstlineno})" if code is not None else ""
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}{where}"


def register(table: dict[str, S], spec: S, aliases: tuple[str, ...], what: str) -> S | None:
    """Put ``spec`` in ``table`` under its name and each alias; return the
    spec it replaces (the same function registered before under the same
    name), whose names were all removed, or None.

    UsageError, and ``table`` unchanged, when a name or alias is held by
    another registration."""
    old = table.get(spec.name)
    if old is not None and not (old.name == spec.name and _same(old.fn, spec.fn)):
        old = None
    for key in (spec.name, *aliases):
        held = table.get(key)
        if held is None or held is old:
            continue
        role = "name" if key == spec.name else "alias"
        theirs = "" if held.name == key else f" (an alias of {held.name!r})"
        raise errors.UsageError(
            f"two {what}s have the {role} {key!r}: {describe(held.fn)} is registered as {key!r}{theirs}, and "
            f"{describe(spec.fn)} asks for it; a recorded name must mean one function, so pass name= (or "
            "change aliases=) to tell them apart"
        )
    if old is not None:
        for key in [k for k, s in table.items() if s is old]:
            del table[key]
    table[spec.name] = spec
    for key in aliases:
        table[key] = spec
    return old
