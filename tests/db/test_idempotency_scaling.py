"""Looking up a batch's idempotency keys touches those keys, not every key of the caller.

A partner keeps a day of keys (millions for a busy one). Statistics taken while it had few
estimate a handful of rows for it; a plan that then hashes all of them per batch grows with
the retention window, not with the batch. Counted with the transaction's own table
statistics (pg_stat_xact_user_tables), which are exact and need no timing.

The batches here are small (50 keys): in a table of 40,000 rows PostgreSQL 15 rightly
prefers one sequential scan to 500 index probes, which would say nothing about a table of
millions. With 50 keys both PostgreSQL 15 and 18 probe, and the old statements still read
all 20,000 of the partner's keys on both.

Each test runs with the plans of a statement's first five runs (custom, for its own
parameters) and with the generic plan a prepared statement may use from its sixth.
"""

from __future__ import annotations

import asyncio
from uuid import UUID, uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from wallet_server.services import UnitOfWork
from wallet_server.storage.repositories import BatchWrites, GroupWrites

PRINCIPAL = "partner:busy"
OTHER_KEYS = 20_000
BATCH = 50


async def _keys_read(uow: UnitOfWork) -> int:
    """Rows of idempotency_keys this transaction has read so far, by index or by scan."""
    row = (
        await uow.connection.execute(
            text(
                "SELECT coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0) "
                "FROM pg_stat_xact_user_tables WHERE relname = 'idempotency_keys'"
            )
        )
    ).one()
    return int(row[0])


@pytest.fixture(params=["force_custom_plan", "force_generic_plan"])
def plan_cache_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _plan(uow: UnitOfWork, mode: str) -> None:
    """Plan this transaction's statements the given way (a setting of the transaction)."""
    await uow.connection.execute(text(f"SET LOCAL plan_cache_mode = {mode}"))


async def _stale_statistics_for_a_busy_partner(engine: AsyncEngine) -> None:
    """Keys of many callers and a few of the partner's analyzed, then many more of the
    partner's that the statistics have not seen."""
    async with engine.connect() as conn:
        await conn.execute(
            text(
                "INSERT INTO idempotency_keys (principal, request_id, method, fingerprint) "
                "SELECT 'user:' || (g % 500), gen_random_uuid(), 'Transfer', '\\x00'::bytea "
                "FROM generate_series(1, :n) AS g"
            ),
            {"n": OTHER_KEYS},
        )
        for count in (50, OTHER_KEYS):
            await conn.execute(
                text(
                    "INSERT INTO idempotency_keys (principal, request_id, method, fingerprint, "
                    "response) SELECT :p, gen_random_uuid(), 'CreateTransfers.item', "
                    "'\\x00'::bytea, '{}'::jsonb FROM generate_series(1, :n)"
                ),
                {"p": PRINCIPAL, "n": count},
            )
            await conn.commit()
            if count == 50:
                await conn.execute(text("ANALYZE idempotency_keys"))


async def test_a_batch_reads_and_stores_its_keys_without_reading_the_others(
    clean_db: AsyncEngine, plan_cache_mode: str
) -> None:
    await _stale_statistics_for_a_busy_partner(clean_db)
    keys: dict[UUID, tuple[UUID | None, UUID | None]] = {
        uuid4(): (None, None) for _ in range(BATCH)
    }
    async with UnitOfWork(clean_db) as uow:
        await _plan(uow, plan_cache_mode)
        store = await uow.batches()
        before = await _keys_read(uow)
        reads = await store.read_and_lock(principal=PRINCIPAL, keys=keys)
        assert reads.stored == {}
        read = await _keys_read(uow)
        writes = BatchWrites(
            initiator=PRINCIPAL,
            method="m",
            item_keys=dict.fromkeys(keys, (b"\x01", '{"result": 1}')),
        )
        await store.record_and_write(
            initiator=PRINCIPAL, transactions=[], documents=lambda: asyncio.sleep(0, writes)
        )
        stored = await _keys_read(uow)
        await uow.commit()
    # Each phase may read each of the batch's keys (and index entries) a few times, but
    # never the partner's other 20,000.
    assert read - before <= 2 * BATCH
    assert stored - read <= 2 * BATCH
    async with clean_db.connect() as conn:
        answered = await conn.scalar(
            text("SELECT count(*) FROM idempotency_keys WHERE response::text = '{\"result\": 1}'")
        )
    assert answered == BATCH


async def test_a_transfer_group_claims_and_answers_its_keys_without_reading_the_others(
    clean_db: AsyncEngine, plan_cache_mode: str
) -> None:
    await _stale_statistics_for_a_busy_partner(clean_db)
    keys = {(PRINCIPAL, uuid4()): ("Transfer", b"\x03") for _ in range(64)}
    async with UnitOfWork(clean_db) as uow:
        await _plan(uow, plan_cache_mode)
        store = await uow.movement_groups()
        before = await _keys_read(uow)
        reads = await store.claim_and_lock(keys=keys, account_ids=[], names=[])
        assert reads.stored == {}
        claimed = await _keys_read(uow)
        store.write(GroupWrites(responses={key: '{"result": 3}' for key in keys}))
        await uow.send_held_writes()
        answered = await _keys_read(uow)
        await uow.commit()
    assert claimed - before <= 2 * len(keys)
    assert answered - claimed <= 2 * len(keys)
