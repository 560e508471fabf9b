"""The text form of ids, which every response, stored result and event spells out."""

from __future__ import annotations

from functools import lru_cache
from uuid import UUID

# ``str(UUID)`` is pure Python (about 1.5 us); one batch item spells its account and
# transaction ids some twenty times over (stored response, event, audit, response message),
# and a batch repeats the same accounts. A hit costs about a quarter of that. A batch of 1000
# spells about 2,500 distinct ids; 8,192 entries hold that in about 2.5 MB.
_CACHED_IDS = 1 << 13


@lru_cache(maxsize=_CACHED_IDS)
def id_text(value: UUID) -> str:
    """``str(value)``, remembered for the ids seen most recently."""
    return str(value)


def optional_id_text(value: UUID | None) -> str:
    """The id's text, or "" for none (how protobuf spells an unset id)."""
    return "" if value is None else id_text(value)
