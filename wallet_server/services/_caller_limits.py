"""How many of one kind of call each caller may have open at once, in this process."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from wallet_server.domain import RateLimited, Reason

__all__ = ["CallerLimit"]


class CallerLimit:
    """Counts each caller's open calls of one kind; one more than ``limit`` is refused with
    RESOURCE_EXHAUSTED / RATE_LIMITED before it does anything. Such calls hold memory while
    they are open (a stream, a batch waiting its turn), and one caller must not take it all."""

    def __init__(self, limit: int, what: str) -> None:
        self._limit = limit
        self._what = what
        self._open: dict[str, int] = {}

    @contextlib.contextmanager
    def hold(self, caller: str) -> Iterator[None]:
        """Count one open call of ``caller`` (a principal's key) while the block runs."""
        count = self._open.get(caller, 0)
        if count >= self._limit:
            raise RateLimited(
                f"at most {self._limit} {self._what} per caller at a time; wait for one to finish",
                reason=Reason.RATE_LIMITED,
            )
        self._open[caller] = count + 1
        try:
            yield
        finally:
            left = self._open[caller] - 1
            if left:
                self._open[caller] = left
            else:
                del self._open[caller]
