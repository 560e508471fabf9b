"""The text form of ids, which every response, stored result and event spells out."""

from __future__ import annotations

from functools import lru_cache
from uuid import UUID

# ``str(UUID)`` is pure Python (about 1.5 us); one batch item spells its account and
# transaction ids some twenty times over (stored response, event, audit, response message),
# and a batch repeats the same accounts. A hit costs about a quarter of that.
_CACHED_IDS = 1 << 16


@lru_cache(maxsize=_CACHED_IDS)
def id_text(value: UUID) -> str:
    """``str(value)``, remembered for the ids seen most recently."""
    return str(value)


def optional_id_text(value: UUID | None) -> str:
    """The id's text, or "" for none (how protobuf spells an unset id)."""
    return "" if value is None else id_text(value)
