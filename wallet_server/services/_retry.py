"""Run a use case again when the database reports a serialization failure or deadlock."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from wallet_server.domain import Unavailable
from wallet_server.storage import (
    is_being_cancelled,
    is_retryable_conflict,
    is_unavailable,
    raise_if_cancelling,
)

P = ParamSpec("P")
T = TypeVar("T")

MAX_ATTEMPTS = 8


def _worth_another_run(exc: BaseException) -> bool:
    """A transient conflict, unless the call was cancelled meanwhile: its caller is gone, and
    a new run would commit an effect nobody asked for any more."""
    return is_retryable_conflict(exc) and not is_being_cancelled()


def retry_on_conflict(use_case: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Retry the whole use case (a fresh transaction each time) on transient conflicts.

    Clients never see a deadlock; an unreachable database becomes ``UNAVAILABLE``.
    """

    @functools.wraps(use_case)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_worth_another_run),
                stop=stop_after_attempt(MAX_ATTEMPTS),
                wait=wait_random_exponential(multiplier=0.002, max=0.1),
                reraise=True,
            ):
                with attempt:
                    return await use_case(*args, **kwargs)
        except Exception as exc:
            raise_if_cancelling(exc)
            if is_unavailable(exc):
                raise Unavailable("the database is unavailable; retry later") from exc
            raise
        raise AssertionError("unreachable")

    return wrapper
