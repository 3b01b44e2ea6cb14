"""Encoding of workflow inputs, step outcomes and errors.

Default: JSON through msgspec, decoded by the function's type annotations
(dataclasses, attrs classes, Pydantic v2 models, msgspec Structs, datetime,
UUID, Decimal, enums, bytes ...; Pydantic through msgspec's hooks, in
``_codec_hooks``).
The value a workflow receives on its first run is the *decoded* one, so a
live run and a replay see identical values. JSON keeps the journal readable
with plain SQL (``json_extract``) and loading a database never runs code.

``codec="pickle"`` stores arbitrary objects; it executes code from the
database when decoding, so use it only if you trust every writer of the file.
Errors are always stored as JSON descriptions, whatever the codec.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import pickle
import sys
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import msgspec

from . import errors
from ._codec_hooks import Unencodable, dec_hook, enc_hook, field_names
from ._codec_hooks import qualname as _qualname
from ._codec_hooks import type_name as _type_name

Decoder = Callable[[Any], Any]

# Where a value comes from, for error messages: a string, or a tuple
# ``(what, name, workflow_id, position)`` formatted only when an error is
# raised (the hot path builds no message).
Where = Any


def describe(where: Where) -> str:
    if isinstance(where, tuple):
        what, name, workflow_id, position = cast("tuple[Any, Any, Any, Any]", where)
        return f"{what} {name!r} (workflow {workflow_id!r}, position {position})"
    return str(where)


def type_label(annotation: Any) -> str:
    """``module.Name`` for a class, the annotation's repr otherwise (``list[m.M]``)."""
    return _qualname(annotation) if isinstance(annotation, type) else repr(annotation)


# What a decoder raises for a stored value that does not fit its type
# (msgspec.ValidationError is a DecodeError; a model's own validation error
# reaches the caller as one, with its path).
DECODE_FAILURES = (msgspec.DecodeError,)


def decode_failure(where: Where, decode: Decoder, exc: BaseException) -> errors.SerializationError:
    """The typed error for a stored value that no longer decodes with ``decode``
    (e.g. its model gained a required field). Nothing is lost: the journal
    keeps the value, and the workflow can be resumed once the type fits."""
    where = describe(where)
    type_name = type_label(getattr(getattr(decode, "__self__", None), "type", Any))  # a msgspec Decoder's type
    return errors.SerializationError(
        f"{where}: the stored value does not decode as {type_name}: {exc}", where=where, type_name=type_name
    )


# Types whose encode-then-decode is the identity: the live path skips decoding.
_IDENTITY = frozenset({int, str, bool, type(None)})
_ANY: Any = Any

# A signature's positional parameters, for Codec.decode_inputs: (how many
# are required, ((name, annotation or None), ...)).
InputsPlan = tuple[int, tuple[tuple[str, Any], ...]]
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def inputs_plan(signature: inspect.Signature, hints: dict[str, Any]) -> InputsPlan | None:
    """The plan of a signature whose parameters all take a position (no
    ``*args``, ``**kwargs`` or keyword-only ones), else None."""
    params = list(signature.parameters.values())
    if not all(p.kind in _POSITIONAL for p in params):
        return None
    required = sum(1 for p in params if p.default is inspect.Parameter.empty)
    if any(p.default is inspect.Parameter.empty for p in params[required:]):
        return None  # (not a valid signature of a def; keep to bind)
    return required, tuple((p.name, hints.get(p.name)) for p in params)


def annotations_of(fn: Callable[..., Any]) -> dict[str, Any]:
    """Resolved type hints of ``fn`` (empty when they cannot be resolved)."""
    try:
        return typing.get_type_hints(fn)
    except Exception:
        return {}


class Codec:
    """How values are stored. Subclasses: :class:`JsonCodec`, :class:`PickleCodec`."""

    name = ""

    def encode(self, value: Any, where: Where) -> Any:
        raise NotImplementedError

    def decoder(self, annotation: Any) -> Decoder:
        """A function turning a stored value back into ``annotation``'s type."""
        raise NotImplementedError

    def roundtrip(self, value: Any, where: Where, decode: Decoder, identity: bool) -> tuple[Any, Any]:
        """(stored form, decoded value) of a live value.

        ``identity`` says the decoder returns primitives unchanged, so a
        primitive skips the decode.
        """
        raw = self.encode(value, where)
        if identity and type(value) in _IDENTITY:
            return raw, value
        try:
            return raw, decode(raw)
        except DECODE_FAILURES as exc:  # it would not replay: refuse it now, as an unencodable one
            raise decode_failure(where, decode, exc) from exc

    # -- workflow inputs -------------------------------------------------------

    def encode_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any], where: str) -> Any:
        return self.encode([list(args), kwargs], where)

    def decode_inputs(
        self,
        raw: Any,
        signature: inspect.Signature | None,
        hints: dict[str, Any],
        plan: InputsPlan | None = None,
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """(args, kwargs) of stored inputs, each value converted to its
        parameter's annotation. ``plan`` (:func:`inputs_plan` of the same
        signature and hints) takes a shortcut for inputs passed by position
        only; the general path below is the reference (tests pin both agree)."""
        args, kwargs = self._load_inputs(raw)
        if signature is None or not hints:
            return tuple(args), dict(kwargs)
        if plan is not None and not kwargs and plan[0] <= len(args) <= len(plan[1]):
            # What bind() gives for positional inputs of a signature without
            # *args, **kwargs or keyword-only parameters, minus its cost
            # (once per workflow start); a primitive already of its
            # annotation's exact type converts to itself.
            convert = self._convert
            return tuple(
                [
                    v if ann is None or (type(v) is ann and ann in _IDENTITY) else convert(v, ann, name)
                    for v, (name, ann) in zip(args, plan[1], strict=False)  # (args may stop short)
                ]
            ), {}
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return tuple(args), dict(kwargs)  # the call itself will report it
        for name, value in list(bound.arguments.items()):
            ann = hints.get(name)
            if ann is None:
                continue
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                bound.arguments[name] = tuple(self._convert(v, ann, name) for v in value)
            elif kind is inspect.Parameter.VAR_KEYWORD:
                bound.arguments[name] = {k: self._convert(v, ann, name) for k, v in value.items()}
            else:
                bound.arguments[name] = self._convert(value, ann, name)
        return bound.args, bound.kwargs

    def _load_inputs(self, raw: Any) -> tuple[list[Any], dict[str, Any]]:
        raise NotImplementedError

    def _convert(self, value: Any, annotation: Any, name: str) -> Any:
        return value


class JsonCodec(Codec):
    """msgspec JSON; values decoded by type annotations."""

    name = "json"

    def __init__(self) -> None:
        # The hook runs only for types msgspec does not know: no cost on the common path.
        self._encoder = msgspec.json.Encoder(decimal_format="string", enc_hook=enc_hook)
        self._plain = msgspec.json.Decoder()

    def encode(self, value: Any, where: Where) -> str:
        try:
            text = self._encoder.encode(value).decode()
        except RecursionError as exc:  # a cyclic value, or one nested past msgspec's limit
            type_name = _type_name(value)
            where = describe(where)
            raise errors.SerializationError(
                f"{where}: cannot encode a value of type {type_name} as JSON: it is cyclic or nested "
                f"too deeply ({exc})",
                where=where,
                type_name=type_name,
            ) from exc
        except (TypeError, msgspec.EncodeError, OverflowError, ValueError) as exc:
            outer = _type_name(value)
            # The type that failed (enc_hook saw it), not the list around it.
            type_name = exc.type_name if isinstance(exc, Unencodable) else outer
            inside = "" if type_name == outer else f" (inside a {outer})"
            where = describe(where)
            raise errors.SerializationError(
                f"{where}: cannot encode a value of type {type_name}{inside} as JSON ({exc}). "
                "Use JSON-friendly types (dataclasses, attrs classes, Pydantic models, msgspec.Struct, "
                "dict, list, str, int, float, bool, datetime, UUID, Decimal, enum, bytes) or open the "
                "Engine with codec='pickle'",
                where=where,
                type_name=type_name,
            ) from exc
        # JSON has no NaN or infinity: msgspec writes them as null, which would
        # silently turn the value into another one. Refuse them instead (only
        # a text holding "null" can hold one, so the walk is rare).
        if "null" in text and _non_finite(value, 0):
            where = describe(where)
            raise errors.SerializationError(
                f"{where}: a float NaN or infinity cannot be stored as JSON (it would come back as None); "
                "store it as a string, or open the Engine with codec='pickle'",
                where=where,
                type_name="float",
            )
        return text

    def decoder(self, annotation: Any) -> Decoder:
        if annotation is _ANY or annotation is inspect.Signature.empty:
            return self._plain.decode
        # An annotation holding a Pydantic model exists only once pydantic is
        # imported; without it the decoder is exactly msgspec's own.
        hook = dec_hook if "pydantic" in sys.modules else None
        try:
            typed = msgspec.json.Decoder(type=annotation, dec_hook=hook)
        except TypeError:
            return self._plain.decode  # an annotation msgspec cannot target
        return typed.decode

    def _load_inputs(self, raw: Any) -> tuple[list[Any], dict[str, Any]]:
        args, kwargs = self._plain.decode(raw)
        return args, kwargs

    def _convert(self, value: Any, annotation: Any, name: str) -> Any:
        try:
            return msgspec.convert(value, annotation, strict=False, dec_hook=dec_hook)
        except (msgspec.ValidationError, TypeError) as exc:
            type_name = type_label(annotation)
            raise errors.SerializationError(
                f"stored workflow input {name!r} ({value!r}) does not fit annotation {type_name}: {exc}",
                where="workflow inputs",
                type_name=type_name,
            ) from exc


class PickleCodec(Codec):
    """Arbitrary objects. Decoding runs code: trust every writer of the file."""

    name = "pickle"

    def encode(self, value: Any, where: Where) -> bytes:
        try:
            return pickle.dumps(value, protocol=5)
        except Exception as exc:
            type_name = _type_name(value)
            where = describe(where)
            raise errors.SerializationError(
                f"{where}: cannot pickle a value of type {type_name} ({exc})",
                where=where,
                type_name=type_name,
            ) from exc

    def decoder(self, annotation: Any) -> Decoder:
        return pickle.loads

    def _load_inputs(self, raw: Any) -> tuple[list[Any], dict[str, Any]]:
        args, kwargs = pickle.loads(raw)
        return args, kwargs


def get_codec(name: str) -> Codec:
    if name == "json":
        return JsonCodec()
    if name == "pickle":
        return PickleCodec()
    raise errors.UsageError(f"codec must be 'json' or 'pickle', not {name!r}")


# -- errors (always JSON) -------------------------------------------------------

_error_encoder = msgspec.json.Encoder()


_ENCODE_FAILURES = (TypeError, msgspec.EncodeError, OverflowError, ValueError, RecursionError)


def encode_error(exc: BaseException) -> str:
    """A JSON description of an exception: type, message, args, and its
    attributes (``__dict__``), so that it is rebuilt as it was, without
    calling its constructor (whose signature may not match its args)."""
    doc: dict[str, Any] = {"type": _qualname(type(exc)), "message": str(exc)}
    if isinstance(exc, errors.DurablyError):
        fields = {name: getattr(exc, name, None) for name in exc._fields}
        doc["args"] = [exc.message]
        doc["fields"] = fields
    else:
        doc["args"] = list(exc.args)
        state = {k: v for k, v in getattr(exc, "__dict__", {}).items() if not k.startswith("__")}
        if state:
            doc["state"] = state
    try:
        return _error_encoder.encode(doc).decode()
    except _ENCODE_FAILURES:
        # Something in it is not JSON: keep what is certain (type, message,
        # args as text); it comes back as StepFailedError (``exact`` false).
        doc.pop("fields", None)
        doc.pop("state", None)
        doc["args"] = [str(a) for a in getattr(exc, "args", ())] or [str(exc)]
        doc["inexact"] = True
        return _error_encoder.encode(doc).decode()


def decode_error(raw: Any) -> BaseException:
    """Rebuild a stored exception as it was: its class (looked up among
    imported modules), its args and its attributes, without calling its
    constructor. Falls back to :class:`StepFailedError` (carrying the type
    name, message and args) when the class is gone or the exception could
    not be stored exactly; never an object with wrong attributes."""
    doc = msgspec.json.decode(raw)
    type_name = doc.get("type", "")
    args = doc.get("args", [])
    cls = _import_qualname(type_name)
    if isinstance(cls, type) and issubclass(cls, Exception) and not doc.get("inexact"):
        try:
            if issubclass(cls, errors.DurablyError):
                return cls(*args[:1], **(doc.get("fields") or {}))
            exc = cls.__new__(cls, *args)  # BaseException.__new__ sets args; __init__ is not run
            exc.args = tuple(args)
            state = doc.get("state")
            if state:
                exc.__dict__.update(state)
            return exc
        except Exception:
            pass
    return errors.StepFailedError(f"{type_name}: {doc.get('message', '')}", type_name=type_name, args=args)


def _non_finite(value: Any, depth: int) -> bool:
    """Whether ``value`` holds a float NaN or infinity (containers,
    dataclasses, attrs classes, Pydantic models and msgspec Structs walked;
    deeper than JSON nests, no)."""
    if depth > 200:
        return False
    if type(value) is float or isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (str, bytes, int)) or value is None:
        return False
    if isinstance(value, dict):
        items = cast("Mapping[Any, Any]", value).items()
        return any(_non_finite(k, depth + 1) or _non_finite(v, depth + 1) for k, v in items)
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_non_finite(v, depth + 1) for v in cast("Iterable[Any]", value))
    fields = getattr(value, "__struct_fields__", None)
    if fields is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = [f.name for f in dataclasses.fields(value)]
    if fields is None and not isinstance(value, type):
        fields = field_names(value)
    if fields:
        return any(_non_finite(getattr(value, f, None), depth + 1) for f in fields)
    return False


def _import_qualname(name: str) -> Any:
    """Look a class up among *already imported* modules (never import: a
    database must not be able to make durably run module code)."""
    import builtins
    import sys

    if "." not in name:
        return getattr(builtins, name, None)
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is None:
            continue
        obj: Any = module
        for part in parts[cut:]:
            obj = getattr(obj, part, None)
            if obj is None:
                return None
        return obj
    return None
