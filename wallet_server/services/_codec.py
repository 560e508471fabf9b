"""JSON encoding of use-case results, so an idempotent replay returns the original response.

Results are frozen dataclasses of UUIDs, datetimes, enums, ints, strings, Money and tuples of
those; decoding is driven by the type hints, so what comes back is the same value.

:func:`encode` gives the JSON-ready form (fingerprints spell it canonically); :func:`to_json`
gives the same document as text, for what is stored (responses, events), about three times
faster through orjson.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum
from functools import cache, lru_cache
from typing import Any, TypeVar
from uuid import UUID

import orjson

from wallet_server.domain import id_text

T = TypeVar("T")


def encode(value: Any) -> Any:
    """JSON-ready form of ``value`` (dataclasses become objects, ids and times strings)."""
    if value is None:
        return None
    kind = type(value)
    encoder = _ENCODERS.get(kind)
    if encoder is None:
        encoder = _ENCODERS[kind] = _encoder_for(kind)
    return encoder(value)


def to_json(value: Any) -> str:
    """``json.dumps(encode(value))`` as a document (compact, not ASCII-escaped): the same
    objects, ids, times and enum values; ``test_codec_and_fingerprint.py`` holds the two
    together."""
    return orjson.dumps(value, default=_not_native, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()


def embedded(value: Any) -> Any:
    """``value`` serialized once for several documents: :func:`to_json` writes the result
    as that JSON, unchanged, wherever it appears."""
    return orjson.Fragment(
        orjson.dumps(value, default=_not_native, option=orjson.OPT_PASSTHROUGH_DATETIME)
    )


def fields_of(value: Any, **replaced: Any) -> dict[str, Any]:
    """A dataclass's fields in order, the mapping :func:`to_json` writes for it, with some
    replaced (by :func:`embedded` values, say)."""
    kind: type = type(value)
    return {
        name: replaced[name] if name in replaced else getattr(value, name)
        for name in _field_names(kind)
    }


@cache
def _field_names(kind: type) -> tuple[str, ...]:
    """A dataclass's field names in order (worked out once per type)."""
    return tuple(f.name for f in dataclasses.fields(kind))


def _not_native(value: Any) -> Any:
    """What orjson leaves to us, as :func:`encode` does it: sets, and datetimes (orjson
    rounds a UTC offset to the minute; one read back in a historical time zone can have
    seconds, +00:19:32 in Amsterdam before 1937)."""
    if isinstance(value, datetime):
        return _utc_text(value) if value.tzinfo is UTC else value.isoformat()
    if isinstance(value, frozenset | set):
        return encode(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


# A batch spells the same clock readings thousands of times (each transaction's times, its
# event's, and the creation time of every account its events name, read back in UTC:
# see ``storage/_engine.py``); ``isoformat`` is about ten times a cache hit. Room for a few
# thousand accounts: with 256 entries, 400 accounts spelled at random missed one time in three.
# Only UTC's own tzinfo: equal aware datetimes in another zone can spell differently (their
# offsets, or ``fold``).
@lru_cache(maxsize=4096)
def _utc_text(value: datetime) -> str:
    return value.isoformat()


def _same(value: Any) -> Any:
    return value


def _encoder_for(kind: type) -> Callable[[Any], Any]:
    """How to encode every value of exactly this type (worked out once per type)."""
    if dataclasses.is_dataclass(kind):
        names = _field_names(kind)
        return lambda v: {name: encode(getattr(v, name)) for name in names}
    if issubclass(kind, Enum):  # before str and int: a StrEnum encodes as its value
        return lambda v: v.value
    if issubclass(kind, UUID):
        return id_text
    if issubclass(kind, datetime):
        return lambda v: v.isoformat()
    if issubclass(kind, tuple | list):
        return lambda v: [encode(x) for x in v]
    if issubclass(kind, frozenset | set):
        return lambda v: sorted(encode(x) for x in v)
    if issubclass(kind, str | int | bool):
        return _same
    raise TypeError(f"cannot encode {kind.__name__}")


_ENCODERS: dict[type, Callable[[Any], Any]] = {}


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
