"""Pydantic v2 models in the JSON codec, through msgspec's extension hooks.

msgspec itself knows dataclasses, attrs classes and its Structs. A Pydantic
model is a type it does not know, so msgspec hands it to ``enc_hook`` when
encoding and calls ``dec_hook`` with the target type when decoding. The hooks
look pydantic up in ``sys.modules`` and never import it: a model exists only
once its user imported pydantic, so durably stays free of the dependency, and
the common path pays nothing (msgspec calls the hooks only for types it does
not handle itself).

The refusal of an unknown type names *that* type (msgspec hands the hook the
inner value, not the list or dataclass around it).
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

_reencode = msgspec.json.Encoder().encode


def qualname(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def type_name(value: object) -> str:
    """``value``'s class, as :func:`qualname` spells it."""
    return qualname(type(value))


def class_of(value: object) -> Any:
    """``type(value)``, typed Any: a model's class attributes are read off it."""
    return type(value)


class Unencodable(TypeError):
    """``enc_hook``'s refusal; ``type_name`` is the type that failed."""

    def __init__(self, message: str, type_name: str) -> None:
        super().__init__(message)
        self.type_name = type_name


def model_base() -> Any:
    """pydantic's (v2) ``BaseModel`` if the process imported pydantic, else None."""
    pydantic = sys.modules.get("pydantic")
    if pydantic is None:
        return None
    base = getattr(pydantic, "BaseModel", None)
    return base if hasattr(base, "model_validate_json") else None  # v1 has neither


def enc_hook(obj: Any) -> Any:
    """A Pydantic model as its JSON-mode dump (by alias when it validates by
    alias, computed fields left out: what ``model_validate_json`` takes back)."""
    base = model_base()
    name = type_name(obj)
    if base is not None and isinstance(obj, base):
        by_alias = bool(class_of(obj).model_config.get("validate_by_alias", True))
        try:
            return obj.model_dump(mode="json", by_alias=by_alias, round_trip=True)
        except Exception as exc:  # e.g. bytes that are not UTF-8
            raise Unencodable(f"pydantic could not dump a {name}: {exc}", name) from exc
    raise Unencodable(f"msgspec does not know type {name}", name)


def dec_hook(tp: Any, obj: Any) -> Any:
    """A Pydantic model from its decoded JSON value. JSON-mode validation is the
    inverse of the JSON-mode dump, strict models included (in Python mode a
    strict model refuses the ISO string of its own datetime). Its
    ValidationError is a ValueError, which msgspec reports as a
    ``msgspec.ValidationError`` with the path to the failing value."""
    base = model_base()
    if base is not None and isinstance(tp, type) and issubclass(tp, base):
        model: Any = tp
        return model.model_validate_json(_reencode(obj))
    # Any other type: what msgspec does without a hook (``object`` takes
    # anything, ``Hashable`` a str ...), so no annotation changes meaning.
    try:
        if isinstance(obj, tp):
            return obj
    except TypeError:
        pass
    raise TypeError(f"Expected `{getattr(tp, '__name__', tp)}`, got `{type(obj).__name__}`")  # msgspec adds the path


def field_names(value: Any) -> list[str] | None:
    """The field names of an attrs instance or a Pydantic model (for the walk
    that finds NaN and infinity), else None. A model that serializes them as
    strings gets them back, so it has nothing to refuse."""
    cls = class_of(value)
    attrs_fields = getattr(cls, "__attrs_attrs__", None)
    if attrs_fields is not None:
        return [a.name for a in attrs_fields]
    base = model_base()
    if base is not None and isinstance(value, base):
        if cls.model_config.get("ser_json_inf_nan") == "strings":
            return []
        return [*cls.model_fields, *(value.__pydantic_extra__ or ())]
    return None
