"""System accounts are not locked by movements: their changes are appended, then folded."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from uuid import UUID, uuid4

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.conftest import Ledger
from tests.ledger_checks import BALANCE, count, ledger_violations
from wallet_server import services
from wallet_server.domain import LedgerInvariant, Money, OperatorPrincipal, PartnerPrincipal


def deposit(partner: PartnerPrincipal, account_id: UUID, amount_minor: int) -> services.Deposit:
    return services.Deposit(
        caller=partner,
        request_id=uuid4(),
        account_id=account_id,
        amount=Money("USD", amount_minor),
        external_reference="",
    )


async def settlement_of(engine: AsyncEngine, partner: PartnerPrincipal) -> UUID:
    async with engine.connect() as conn:
        found = await conn.execute(
            text("SELECT account_id FROM accounts WHERE kind = 'settlement' AND partner_id = :p"),
            {"p": partner.partner_id},
        )
        account_id: UUID = found.scalar_one()
        return account_id


async def test_changes_are_appended_then_folded_and_the_ledger_holds_throughout(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice = await ledger.user("alice")
    account = await ledger.account(alice)
    partner = await ledger.partner("bank")
    for amount in (100, 200, 300):
        await services.deposit(deposit(partner, account, amount), uow())
    settlement = await settlement_of(clean_db, partner)

    row = "SELECT posted FROM accounts WHERE account_id = :s"
    assert await count(clean_db, row, s=settlement) == 0  # its row was not written
    assert await count(clean_db, "SELECT count(*) FROM balance_deltas") == 3
    balance = f"SELECT {BALANCE} FROM accounts a WHERE account_id = :s"
    assert await count(clean_db, balance, s=settlement) == -600
    assert await ledger_violations(clean_db) == []

    assert await services.fold_balance_deltas(uow(), limit=2) == 2
    assert await services.fold_balance_deltas(uow(), limit=2) == 1
    assert await services.fold_balance_deltas(uow(), limit=2) == 0

    assert await count(clean_db, row, s=settlement) == -600
    assert await count(clean_db, "SELECT count(*) FROM balance_deltas") == 0
    assert await ledger_violations(clean_db) == []
    report = await services.verify_ledger(
        services.VerifyLedger(caller=OperatorPrincipal(operator_id=uuid4(), name="auditor")),
        uow(),
    )
    assert list(report.violations) == []


async def test_a_movement_does_not_wait_for_a_busy_system_account_row(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice = await ledger.user("alice")
    account = await ledger.account(alice)
    partner = await ledger.partner("bank")
    await services.deposit(deposit(partner, account, 1), uow())
    settlement = await settlement_of(clean_db, partner)

    async with clean_db.connect() as busy:
        # Another transaction updates the settlement row and has not committed.
        await busy.execute(
            text("UPDATE accounts SET posted = posted WHERE account_id = :s"), {"s": settlement}
        )
        async with asyncio.timeout(10):
            tx = await services.deposit(deposit(partner, account, 50), uow())
        await busy.rollback()

    assert tx.from_account_id == settlement
    assert await ledger.balance(alice, account) == 51
    assert await ledger_violations(clean_db) == []


async def test_verify_ledger_reports_a_forged_change(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice = await ledger.user("alice")
    account = await ledger.account(alice)
    partner = await ledger.partner("bank")
    await services.deposit(deposit(partner, account, 100), uow())
    settlement = await settlement_of(clean_db, partner)
    async with clean_db.begin() as conn:
        await conn.execute(
            text("INSERT INTO balance_deltas (account_id, amount) VALUES (:s, 7)"),
            {"s": settlement},
        )

    report = await services.verify_ledger(
        services.VerifyLedger(caller=OperatorPrincipal(operator_id=uuid4(), name="auditor")),
        uow(),
    )

    assert [(v.invariant, v.account_id) for v in report.violations] == [
        (LedgerInvariant.POSTED_BALANCE, settlement)
    ]
