"""Snapshots and the like as JSON, for the control socket and the phone page.

Generic over loadshed's frozen dataclasses: a dataclass becomes an object of its fields, an enum
its value, a tuple a list. Decoding follows the type hints: unknown fields are ignored and
missing ones take their defaults, so a client and a daemon one version apart still understand
each other. A value of the wrong type is a `WireError`, never a half-built snapshot.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class WireError(ValueError):
    """A JSON document that is not what its type says."""


def encode(value: object) -> Any:
    """A JSON-able form of a dataclass, an enum, a tuple or a plain value."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [encode(item) for item in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    return value


def decode(kind: type[T], doc: object) -> T:
    """Build a `kind` (a dataclass) from its JSON form; raise WireError if it does not fit."""
    value: T = _decode(kind, doc, kind.__name__)
    return value


def _decode(hint: Any, doc: object, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if doc is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _decode(option, doc, where)
            except WireError:
                continue
        raise WireError(f"{where}: {doc!r} fits none of {hint}")
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(doc, list):
            raise WireError(f"{where}: expected a list, found {type(doc).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], item, f"{where}[{n}]") for n, item in enumerate(doc))
        if len(args) != len(doc):
            raise WireError(f"{where}: expected {len(args)} items, found {len(doc)}")
        return tuple(
            _decode(a, item, f"{where}[{n}]")
            for n, (a, item) in enumerate(zip(args, doc, strict=True))
        )
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _dataclass(hint, doc, where)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(doc)
        except ValueError:
            raise WireError(f"{where}: {doc!r} is not a {hint.__name__}") from None
    if hint is float:
        if isinstance(doc, int | float) and not isinstance(doc, bool):
            return float(doc)
        raise WireError(f"{where}: expected a number, found {doc!r}")
    if hint in (int, str, bool):
        if type(doc) is hint:
            return doc
        raise WireError(f"{where}: expected {hint.__name__}, found {type(doc).__name__}")
    if hint is Any or hint is object:
        return doc
    raise WireError(f"{where}: cannot read a {hint}")


def _dataclass(kind: type, doc: object, where: str) -> Any:
    if not isinstance(doc, dict):
        raise WireError(f"{where}: expected an object, found {type(doc).__name__}")
    hints = _hints(kind)
    values = {}
    for f in dataclasses.fields(kind):
        if f.name in doc:
            values[f.name] = _decode(hints[f.name], doc[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise WireError(f"{where}: {f.name} is missing")
    return kind(**values)


@functools.cache
def _hints(kind: type) -> dict[str, Any]:
    return typing.get_type_hints(kind)
