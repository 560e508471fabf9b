"""Batches in flight per server process: a bounded number at a time, the rest waiting their
turn without taking a lock; checked with a real row lock holding the first batch up."""

from __future__ import annotations

import asyncio
from uuid import UUID

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.conftest import Ledger
from tests.db.test_batch import UowFactory, World, batch, item, outcome
from wallet_server import services


async def _waiting_for_a_row_lock(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        waiting = await conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
        return bool(waiting.scalar_one())


async def _held_up(engine: AsyncEngine, account_id: UUID) -> asyncio.Task[None]:
    """A transaction holding ``account_id``'s row lock until the task is cancelled."""
    locked = asyncio.Event()

    async def hold() -> None:
        async with engine.connect() as conn:
            await conn.execute(
                text("SELECT 1 FROM accounts WHERE account_id = :a FOR UPDATE"), {"a": account_id}
            )
            locked.set()
            try:
                await asyncio.Event().wait()
            finally:
                await conn.rollback()

    task = asyncio.create_task(hold())
    await locked.wait()
    return task


@pytest.fixture
async def world(ledger: Ledger, uow: UowFactory) -> World:
    return await World(ledger, uow).setup()


@pytest.mark.parametrize("max_in_flight", [1, 2])
async def test_a_batch_beyond_the_bound_waits_its_turn_and_then_runs(
    world: World, uow: UowFactory, clean_db: AsyncEngine, max_in_flight: int
) -> None:
    w = world
    slots = services.BatchSlots(uow, max_in_flight=max_in_flight)
    holder = await _held_up(clean_db, w.a)
    first = asyncio.create_task(slots.create_transfers(batch(w.partner, [item(w.s, w.a, 100)])))
    second = asyncio.create_task(slots.create_transfers(batch(w.partner, [item(w.s, w.b, 200)])))
    finished: list[str] = []
    first.add_done_callback(lambda _: finished.append("first"))
    second.add_done_callback(lambda _: finished.append("second"))
    try:
        for _ in range(100):  # the first batch reaches the locked row and waits there
            if await _waiting_for_a_row_lock(clean_db):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the first batch never waited for the row lock")
        if max_in_flight == 1:
            # The second touches other accounts, yet waits for the first's slot, holding no
            # connection meanwhile: the pool has lent out the holder's and the first's only.
            done, _ = await asyncio.wait({second}, timeout=0.5)
            assert not done
            assert clean_db.pool.checkedout() == 2  # type: ignore[attr-defined]
        else:
            result = await asyncio.wait_for(asyncio.shield(second), 10)
            assert [outcome(r) for r in result.results] == ["OK"]
        assert not first.done()
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
        await asyncio.wait_for(asyncio.gather(asyncio.shield(first), asyncio.shield(second)), 10)
        # One slot: the second ran only after the first; two: it finished while the first waited.
        assert finished == (["first", "second"] if max_in_flight == 1 else ["second", "first"])
        results = [first.result(), second.result()]
        assert [[outcome(r) for r in res.results] for res in results] == [["OK"], ["OK"]]
    finally:
        for task in (holder, first, second):
            task.cancel()
        await asyncio.gather(holder, first, second, return_exceptions=True)
