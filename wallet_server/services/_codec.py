"""JSON encoding of use-case results, so an idempotent replay returns the original response.

Results are frozen dataclasses of UUIDs, datetimes, enums, ints, strings, Money and tuples of
those; decoding is driven by the type hints, so what comes back is the same value.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import datetime
from enum import Enum
from functools import cache
from typing import Any, TypeVar
from uuid import UUID

T = TypeVar("T")


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def encode(value: Any) -> Any:
    kind = type(value)
    # The common cases first, by exact type (an enum that is also a str is not ``str``).
    if value is None or kind is str or kind is int or kind is bool:
        return value
    if kind is UUID:
        return str(value)
    if dataclasses.is_dataclass(kind):
        return {name: encode(getattr(value, name)) for name in _field_names(kind)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, UUID | datetime):
        return str(value) if isinstance(value, UUID) else value.isoformat()
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    if isinstance(value, frozenset | set):
        return sorted(encode(v) for v in value)
    if value is None or isinstance(value, str | int | bool):
        return value
    raise TypeError(f"cannot encode {type(value).__name__}")


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def decode(hint: Any, data: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        if data is None:
            return None
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return decode(inner, data)
    if origin is tuple:
        inner = typing.get_args(hint)[0]
        return tuple(decode(inner, v) for v in data)
    if isinstance(hint, type):
        if dataclasses.is_dataclass(hint):
            hints = _hints(hint)
            return hint(**{name: decode(hints[name], v) for name, v in data.items()})
        if issubclass(hint, Enum):
            return hint(data)
        if hint is UUID:
            return UUID(data)
        if hint is datetime:
            return datetime.fromisoformat(data)
    return data


def decode_as(cls: type[T], data: Any) -> T:
    result: T = decode(cls, data)
    return result
