"""The audit log: one row per call, even when a call's commit outcome was unclear."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.ledger_checks import count
from wallet_server.services import CallRecord, UnitOfWork, begin_call


async def test_a_fallback_write_after_a_committed_audit_row_is_a_no_op(
    clean_db: AsyncEngine,
) -> None:
    record = CallRecord(
        method="/wallet.v1.WalletService/Transfer",
        peer="ipv4:127.0.0.1:1",
        started_at=datetime.now(UTC),
    )
    begin_call(record)
    async with UnitOfWork(clean_db) as uow:
        await uow.commit()  # the effect's transaction writes the OK row
    # The client never saw the commit return; transport writes its fallback row.
    record.audited = False
    async with UnitOfWork(clean_db) as uow:
        await uow.commit(code="CANCELLED")

    assert await count(clean_db, "SELECT count(*) FROM audit_log") == 1
    assert await count(clean_db, "SELECT count(*) FROM audit_log WHERE code = 'OK'") == 1

    other = CallRecord(method=record.method, peer=record.peer, started_at=datetime.now(UTC))
    assert other.call_id != record.call_id
    begin_call(other)
    async with UnitOfWork(clean_db) as uow:
        await uow.commit(code="NOT_FOUND")
    assert await count(clean_db, "SELECT count(*) FROM audit_log") == 2
