"""A key another transaction commits while a set-based writer waits on it is not lost.

A transfer group's claim statement inserts its keys and reads the ones already stored from
its own snapshot. A key whose first claimer had not committed when that snapshot was taken
is neither claimed (the insert waited, then found it) nor seen (the snapshot is older): the
group reads such keys again in a second statement. A partner batch reads its item keys first
and stores them when it is done: a key stored in between is found by that insert. Here a
transaction holds a key uncommitted, the writer starts and waits on it, and the holder then
commits.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from uuid import UUID, uuid4

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tests.db.conftest import Ledger
from tests.db.test_batch import batch, item, settlement
from tests.ledger_checks import ledger_violations
from wallet_server import services
from wallet_server.services import UnitOfWork
from wallet_server.services._batch import _digests
from wallet_server.storage.repositories import GroupReads, StoredResponse

T = TypeVar("T")

PRINCIPAL = "partner:acme"
STORED = {"error": {"status": "FAILED_PRECONDITION", "reason": "ACCOUNT_FROZEN", "message": "x"}}


async def _hold_key(
    engine: AsyncEngine,
    request_id: UUID,
    method: str,
    *,
    principal: str = PRINCIPAL,
    fingerprint: bytes = b"\x07",
) -> AsyncConnection:
    """A transaction that has stored ``request_id``'s record and not committed yet."""
    conn = await engine.connect()
    await conn.execute(
        text(
            "INSERT INTO idempotency_keys (principal, request_id, method, fingerprint, response) "
            "VALUES (:p, :r, :m, :f, :response)"
        ),
        {
            "p": principal,
            "r": request_id,
            "m": method,
            "f": fingerprint,
            "response": json.dumps(STORED),
        },
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


async def test_a_batch_item_key_stored_while_the_batch_runs_replays_that_outcome(
    ledger: Ledger, uow: Callable[[], UnitOfWork], clean_db: AsyncEngine
) -> None:
    """A batch reads its item keys without waiting and stores them when it is done. A key
    another transaction stores in between is found then: the batch runs again and that item
    replays the other transaction's outcome; its money does not move."""
    partner = await ledger.partner("acme")
    source = await settlement(uow, partner)
    alice = await ledger.user("alice")
    account = await ledger.account(alice)
    late, fresh = item(source, account, 30), item(source, account, 5)
    cmd = batch(partner, [late, fresh])
    _, digests = _digests(cmd)

    holder = await _hold_key(
        clean_db,
        late.request_id,
        "CreateTransfers/item",
        principal=partner.key,
        fingerprint=digests[late.request_id],
    )
    try:
        task = asyncio.ensure_future(services.create_transfers(cmd, uow()))
        await _until_a_claim_waits(clean_db)
        await holder.commit()
        result = await task
    finally:
        await holder.close()

    first, second = result.results
    assert first.transaction is None
    assert first.error is not None
    assert (first.error.reason, first.error.code) == ("ACCOUNT_FROZEN", "FAILED_PRECONDITION")
    assert second.transaction is not None
    assert await ledger.balance(alice, account) == 5
    assert await ledger_violations(clean_db) == []


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
