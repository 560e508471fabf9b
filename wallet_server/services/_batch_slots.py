"""Batches in flight: a few at a time per server process, in arrival order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from wallet_server.services._batch import BatchResult, CreateTransfers, create_transfers
from wallet_server.services._caller_limits import CallerLimit
from wallet_server.services._unit_of_work import UnitOfWork

__all__ = ["MAX_BATCHES_IN_FLIGHT", "MAX_BATCHES_PER_CALLER", "BatchSlots"]

# Batches that credit the same accounts take those rows' locks one after another. With all of
# them running at once, the others' Python work (deciding, serializing) shares the one event
# loop with the batch that holds the locks, which then holds them longer, and PostgreSQL's lock
# queue lets some batches wait for seconds. Sixteen 1000-item batches in flight to the same
# 400 accounts, one server, alternating windows: unbounded 5933 and 5533 transfers a second
# (p99 per batch 12 and 17 s); 4 at a time 6333 and 5867; 2 at a time 6867, 6467, 8133 and
# 6133 (p99 2.1 to 3.1 s); 1 at a time 7800, 6400, 7667 and 6200. Two keep one batch's
# database time overlapping another's Python when their accounts differ: with each of the 16
# batches crediting accounts of its own, one at a time moved 6500 and 5700 a second, two 5800
# to 8600 (mean 7160), four 6400 to 8700 (mean 7340); to shared accounts 5250, 5980 and 5780
# on average, with four's p99 per batch the longest (up to 4.0 s).
MAX_BATCHES_IN_FLIGHT = 2
# A waiting batch holds its parsed items (about 1 MiB for 1000) and keeps the partners behind
# it waiting: one partner sending hundreds at once took the server's memory up by 400 MiB
# and another partner's one-item batch waited 80 s. The benchmark runs 16 from one partner.
MAX_BATCHES_PER_CALLER = 32


class BatchSlots:
    """Runs ``CreateTransfers`` use cases at most ``max_in_flight`` at a time, first come
    first served; the others wait before taking a connection or a lock.

    One queue per process for every partner, and a batch's replay waits its turn like new
    work (the use case finds out it is one); each partner holds at most ``max_per_caller``
    places in it (:meth:`admit`). A batch that waits long on a row lock holds its
    slot meanwhile; the batches behind it would mostly have waited on the same rows."""

    def __init__(
        self,
        new_uow: Callable[[], UnitOfWork],
        *,
        max_in_flight: int = MAX_BATCHES_IN_FLIGHT,
        max_per_caller: int = MAX_BATCHES_PER_CALLER,
    ) -> None:
        self._new_uow = new_uow
        self._slots = asyncio.Semaphore(max_in_flight)
        self._per_caller = CallerLimit(max_per_caller, "batches")

    def admit(self, caller: str) -> contextlib.AbstractContextManager[None]:
        """Hold one of ``caller``'s places for batches, waiting or running, while the block
        parses and runs it; refused with RESOURCE_EXHAUSTED / RATE_LIMITED when it has
        ``max_per_caller`` already."""
        return self._per_caller.hold(caller)

    async def create_transfers(self, cmd: CreateTransfers) -> BatchResult:
        async with self._slots:
            return await create_transfers(cmd, self._new_uow())
