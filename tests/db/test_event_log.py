"""The event log's numbering: only committed events get numbers, and numbers never change."""

from __future__ import annotations

import asyncio
import json
from uuid import uuid4

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from wallet_server.services import UnitOfWork
from wallet_server.storage.repositories import SEQUENCER_BUSY


async def _append(uow: UnitOfWork, name: str) -> None:
    uow.events.append([("transaction_created", None, [uuid4()], json.dumps({"name": name}))])


# An event written at once rather than with the commit: its row and id exist before it.
_APPEND_NOW = text(
    "WITH events AS ("
    " INSERT INTO outbox (type, account_ids, payload)"
    " VALUES ('transaction_created', ARRAY[gen_random_uuid()],"
    " json_build_object('name', CAST(:name AS text)))"
    " RETURNING event_id)"
    " INSERT INTO outbox_unsequenced (event_ids) SELECT ARRAY[event_id] FROM events"
)


async def _number(engine: AsyncEngine) -> int | None:
    async with UnitOfWork(engine) as uow:
        top = await uow.events.number_committed()
        await uow.commit()
        return top


async def _numbers(engine: AsyncEngine) -> dict[str, int | None]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT o.payload::json->>'name', s.sequence FROM outbox AS o "
                "LEFT JOIN event_sequence AS s ON s.event_id = o.event_id"
            )
        )
        return {name: seq for name, seq in rows}


async def test_an_event_that_commits_late_is_numbered_after_those_already_numbered(
    clean_db: AsyncEngine,
) -> None:
    slow = UnitOfWork(clean_db)
    async with slow:
        # A lower event_id, not yet committed (the commit may wait on the disk after it).
        await slow.connection.execute(_APPEND_NOW, {"name": "early-but-slow"})
        async with UnitOfWork(clean_db) as fast:
            await _append(fast, "late-but-fast")
            await fast.commit()
        assert await _number(clean_db) == 1
        await slow.commit()
    assert await _number(clean_db) == 2
    assert await _numbers(clean_db) == {"late-but-fast": 1, "early-but-slow": 2}
    # A reader that saw 1 and resumes after it gets the late event: nothing is skipped.
    async with UnitOfWork(clean_db) as uow:
        after_one = await uow.events.read(after=1, limit=10)
    assert [json.loads(e.payload)["name"] for e in after_one] == ["early-but-slow"]
    assert await _number(clean_db) is None


async def test_one_sequencer_at_a_time_and_numbers_are_never_reassigned(
    clean_db: AsyncEngine,
) -> None:
    async with UnitOfWork(clean_db) as uow:
        for i in range(50):
            await _append(uow, f"e{i}")
        await uow.commit()
    async with UnitOfWork(clean_db) as holder:
        assert await holder.events.number_committed() == 50
        # While the first sequencer's transaction is open, a second one stands aside.
        assert await _number(clean_db) == SEQUENCER_BUSY
        await holder.commit()
    before = await _numbers(clean_db)
    results = await asyncio.gather(*(_number(clean_db) for _ in range(5)))
    assert set(results) <= {None, SEQUENCER_BUSY}
    assert await _numbers(clean_db) == before
    assert sorted(before.values()) == list(range(1, 51))  # type: ignore[type-var]


async def test_a_backlog_that_statistics_call_empty_is_numbered_in_linear_time(
    clean_db: AsyncEngine,
) -> None:
    """Statistics taken while nothing waited estimate one unnumbered event. A plan that
    joins the waiting ids to the pick rescanned the pick once per waiting id; at 20,000 that
    is minutes, here cut short by the statement timeout. The array-and-key pick is linear."""
    async with clean_db.connect() as conn:
        await conn.execute(text(_APPEND_SERIES.format(count=2000)))
        await conn.commit()
    while await _number(clean_db) is not None:
        pass
    async with clean_db.connect() as conn:
        await conn.execute(text("ANALYZE outbox_unsequenced"))  # empty: nothing waits
        await conn.execute(text(_APPEND_SERIES.format(count=20000)))
        await conn.commit()
    async with UnitOfWork(clean_db) as uow:
        await uow.connection.execute(text("SET LOCAL statement_timeout = '20s'"))
        assert await uow.events.number_committed() == 7000  # one batch of 5000
        await uow.commit()
    async with clean_db.connect() as conn:
        waiting = await conn.scalar(text("SELECT count(*) FROM outbox_unsequenced"))
        numbered = await conn.scalar(text("SELECT count(*) FROM event_sequence"))
    assert (waiting, numbered) == (22000 - 7000, 7000)


# Events appended one write each, as single calls append them: a row, and its id waiting.
_APPEND_SERIES = (
    "WITH events AS ("
    " INSERT INTO outbox (type, account_ids, payload)"
    " SELECT 'transaction_created', ARRAY[gen_random_uuid()], '[]'::json"
    " FROM generate_series(1, {count}) RETURNING event_id)"
    " INSERT INTO outbox_unsequenced (event_ids) SELECT ARRAY[event_id] FROM events"
)


async def test_a_write_is_numbered_whole_and_in_event_order(clean_db: AsyncEngine) -> None:
    """A write's events are numbered in one step, together with the writes before it, in
    event order, even when the step goes past the number of events it asked for."""
    async with UnitOfWork(clean_db) as uow:
        await _append(uow, "alone")
        await uow.commit()
    async with UnitOfWork(clean_db) as uow:
        uow.events.append(
            [
                ("transaction_created", None, [uuid4()], json.dumps({"name": f"b{i}"}))
                for i in range(3)
            ]
        )
        await uow.commit()
    async with UnitOfWork(clean_db) as uow:
        await _append(uow, "later")
        await uow.commit()
    async with UnitOfWork(clean_db) as uow:
        assert await uow.events.number_committed(events=2) == 4  # "alone", then all of b
        await uow.commit()
    assert await _number(clean_db) == 5
    assert await _numbers(clean_db) == {"alone": 1, "b0": 2, "b1": 3, "b2": 4, "later": 5}
