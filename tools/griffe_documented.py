"""A griffe extension for the docs site: the reference doc of an ``Engine``
method lives beside the code doing the work and is copied onto the method at
import (``durably.engine.documented``), which griffe's static reading cannot
see. This fills in, for the public classes, the docstrings that only exist at
run time."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import griffe


class RuntimeDocstrings(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name != "durably":
            return
        runtime = importlib.import_module("durably")
        for name in runtime.__all__:
            obj = getattr(runtime, name)
            member = pkg.members.get(name)
            if not inspect.isclass(obj) or member is None:
                continue
            target = member.final_target if isinstance(member, griffe.Alias) else member
            for attr, function in target.members.items():
                if function.is_alias or not function.is_function or function.docstring is not None:
                    continue
                doc = inspect.getdoc(getattr(obj, attr, None))
                if doc:
                    function.docstring = griffe.Docstring(doc, parent=function)
