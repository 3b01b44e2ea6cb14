"""``module:attribute`` paths: how the Replayer's ``--app`` and the crash
check's child process find the user's engine or workflow."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from .. import errors


def import_object(path: str, what: str) -> Any:
    """The object ``path`` names (``package.module:name``, dotted attributes
    allowed after the colon), importing the module with the current
    directory on ``sys.path`` first (as ``python -m`` would). UsageError
    when it does not import or has no such attribute."""
    module_name, colon, attr = path.partition(":")
    if not colon or not module_name or not attr:
        raise errors.UsageError(f"{what} must be 'module:name' (e.g. myapp.flows:engine), not {path!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise errors.UsageError(f"{what} {path!r}: cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise errors.UsageError(f"{what} {path!r}: {module_name!r} has no attribute {attr!r}") from None
    return obj


def path_of(obj: Any) -> str:
    """The ``module:qualname`` that :func:`import_object` finds ``obj`` by
    (UsageError for a function it could not find again: a lambda, a local
    function, one defined in ``__main__``)."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname or module == "__main__":
        raise errors.UsageError(
            f"{obj!r} cannot be imported by a child process (define it at the top level of an importable "
            "module, or pass 'module:name')"
        )
    return f"{module}:{qualname}"
