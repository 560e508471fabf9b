"""A cancellation whose clean-up fails with a database error still ends as a cancellation:
a use case does not report the database unavailable nor run again, and a background loop
stops."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import psycopg
import psycopg.errors
import pytest

from wallet_server.domain import Unavailable
from wallet_server.services._retry import retry_on_conflict
from wallet_server.transport._server import _every


class _CarriedOn(BaseException):
    """A loop ran its step again after it had been cancelled (so nothing swallows it)."""


async def _closed_while_cancelled() -> None:
    """Waits on the database; cancelled, its connection closes and the clean-up fails."""
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        raise psycopg.OperationalError("the connection is closed") from None


def _step_that_may_run_once() -> Callable[[], Awaitable[None]]:
    runs = 0

    async def step() -> None:
        nonlocal runs
        runs += 1
        if runs > 1:
            raise _CarriedOn
        await _closed_while_cancelled()

    return step


async def _ends_cancelled(task: asyncio.Future[None]) -> None:
    """Cancel ``task`` once it waits; it must end, cancelled, within a few seconds."""
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    assert task.done(), "still running after its cancellation"
    assert task.cancelled(), f"ended with {task.exception()!r} instead of its cancellation"


async def test_a_cancelled_use_case_ends_cancelled_not_unavailable() -> None:
    @retry_on_conflict
    async def use_case() -> None:
        await _closed_while_cancelled()

    await _ends_cancelled(asyncio.ensure_future(use_case()))


async def test_a_cancelled_use_case_is_not_run_again_after_a_conflict() -> None:
    runs = 0

    @retry_on_conflict
    async def use_case() -> None:
        nonlocal runs
        runs += 1
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:  # its clean-up met a deadlock
            raise psycopg.errors.DeadlockDetected from None

    await _ends_cancelled(asyncio.ensure_future(use_case()))
    assert runs == 1


async def test_a_use_case_whose_database_goes_away_uncancelled_is_unavailable() -> None:
    @retry_on_conflict
    async def lost() -> None:
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    with pytest.raises(Unavailable):
        await lost()


async def test_a_background_loop_stops_when_its_cancellation_ends_as_a_database_error() -> None:
    await _ends_cancelled(asyncio.ensure_future(_every(0.01, "a step", _step_that_may_run_once())))
