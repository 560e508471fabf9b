"""A cancellation must not end as the error its own clean-up met."""

from __future__ import annotations

import asyncio


def is_being_cancelled() -> bool:
    """True when the current task has been asked to stop (``Task.cancelling()``)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def raise_if_cancelling(exc: BaseException) -> None:
    """Raise :class:`asyncio.CancelledError` (from ``exc``) if the current task is being
    cancelled.

    A cancellation that lands while a statement is in flight can close the connection, and
    the clean-up on the way out (a rollback, a new connection's set-up) then fails with a
    database error in its place. Code that catches errors must not mistake that for one it
    handles: a loop that logs and carries on would never stop, and a call would report the
    database unavailable when it was only cancelled."""
    if is_being_cancelled():
        raise asyncio.CancelledError from exc
