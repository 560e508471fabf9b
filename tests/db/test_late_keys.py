"""A key another transaction commits while a claim waits on it is read back, not lost.

The claim statement inserts its keys and reads the ones already stored from its own
snapshot. A key whose first claimer had not committed when that snapshot was taken is
neither claimed (the insert waited, then found it) nor seen (the snapshot is older): the
set-based writers read such keys again in a second statement. Here a transaction holds a
key uncommitted, the claim starts and waits on it, and the holder then commits.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from uuid import UUID, uuid4

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from wallet_server.services import UnitOfWork
from wallet_server.storage.repositories import BatchReads, GroupReads, StoredResponse

T = TypeVar("T")

PRINCIPAL = "partner:acme"
STORED = {"error": {"status": "FAILED_PRECONDITION", "reason": "ACCOUNT_FROZEN", "message": "x"}}


async def _hold_key(engine: AsyncEngine, request_id: UUID, method: str) -> AsyncConnection:
    """A transaction that has stored ``request_id``'s record and not committed yet."""
    conn = await engine.connect()
    await conn.execute(
        text(
            "INSERT INTO idempotency_keys (principal, request_id, method, fingerprint, response) "
            "VALUES (:p, :r, :m, '\\x07'::bytea, CAST(:response AS json))"
        ),
        {"p": PRINCIPAL, "r": request_id, "m": method, "response": json.dumps(STORED)},
    )
    return conn


async def _until_a_claim_waits(engine: AsyncEngine) -> None:
    """Until some statement waits on a lock while inserting idempotency keys."""
    async with asyncio.timeout(10):
        while True:
            async with engine.connect() as conn:
                waiting = await conn.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock' "
                        "AND query LIKE '%INSERT INTO idempotency_keys%'"
                    )
                )
            if waiting:
                return
            await asyncio.sleep(0.02)


async def _claimed_while_a_key_commits(
    engine: AsyncEngine,
    late: UUID,
    method: str,
    claim: Callable[[UnitOfWork], Coroutine[Any, Any, T]],
) -> T:
    """Run ``claim`` while another transaction holds ``late`` uncommitted, and commit that
    transaction once the claim waits on it."""
    holder = await _hold_key(engine, late, method)
    try:
        async with UnitOfWork(engine) as uow:
            task = asyncio.create_task(claim(uow))
            await _until_a_claim_waits(engine)
            await holder.commit()
            return await task
    finally:
        await holder.close()


async def test_a_batch_reads_a_key_committed_while_its_claim_waited(
    clean_db: AsyncEngine,
) -> None:
    method = "CreateTransfers/item"
    late, fresh = uuid4(), uuid4()

    async def claim(uow: UnitOfWork) -> BatchReads:
        store = await uow.batches()
        return await store.claim_and_lock(
            principal=PRINCIPAL,
            method=method,
            keys={late: (b"\x01", None, None), fresh: (b"\x02", None, None)},
        )

    reads = await _claimed_while_a_key_commits(clean_db, late, method, claim)
    assert reads.stored == {late: StoredResponse(method, b"\x07", STORED)}


async def test_a_transfer_group_reads_a_key_committed_while_its_claim_waited(
    clean_db: AsyncEngine,
) -> None:
    method = "Transfer"
    late, fresh = uuid4(), uuid4()

    async def claim(uow: UnitOfWork) -> GroupReads:
        store = await uow.movement_groups()
        keys = {(PRINCIPAL, late): (method, b"\x01"), (PRINCIPAL, fresh): (method, b"\x02")}
        return await store.claim_and_lock(keys=keys, account_ids=[], names=[])

    reads = await _claimed_while_a_key_commits(clean_db, late, method, claim)
    assert reads.stored == {(PRINCIPAL, late): StoredResponse(method, b"\x07", STORED)}
