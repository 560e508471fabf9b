"""System accounts are not locked by movements: their changes are appended, then folded."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from uuid import UUID, uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.conftest import Ledger
from tests.ledger_checks import BALANCE, count, ledger_violations
from wallet_server import services
from wallet_server.domain import (
    FailedPrecondition,
    LedgerInvariant,
    Money,
    OperatorPrincipal,
    PartnerPrincipal,
    Reason,
)


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

    first = await services.fold_balance_deltas(uow(), limit=2)
    second = await services.fold_balance_deltas(uow(), limit=2)

    assert (first.taken, first.folded) == (2, 3)  # the account's third change went along
    assert (second.taken, second.folded) == (0, 0)

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


async def test_a_system_balance_past_int64_stays_exact_keeps_the_fold_going_and_is_reported(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    # Two deposits of the most a user account holds land before the fold: each was checked
    # against the settlement row, which leaves out changes not folded yet.
    most = 2**63 - 1
    alice, bob, carol = (
        await ledger.user("alice"),
        await ledger.user("bob"),
        await ledger.user("carol"),
    )
    a, b, c = await ledger.account(alice), await ledger.account(bob), await ledger.account(carol)
    bank, other = await ledger.partner("bank"), await ledger.partner("other")
    first = await services.deposit(deposit(bank, a, most), uow())
    await services.deposit(deposit(bank, b, most), uow())
    await services.deposit(deposit(other, c, 5), uow())  # behind them in the queue
    settlement = await settlement_of(clean_db, bank)
    auditor = OperatorPrincipal(operator_id=uuid4(), name="auditor")

    fold = await services.fold_balance_deltas(uow(), limit=3)
    again = await services.fold_balance_deltas(uow(), limit=3)
    report = await services.verify_ledger(services.VerifyLedger(caller=auditor), uow())
    with pytest.raises(FailedPrecondition) as listing:
        await services.list_settlement_accounts(
            services.ListSettlementAccounts(caller=bank, page_size=10, after_currency=None), uow()
        )

    assert (fold.folded, fold.out_of_range) == (
        1,
        frozenset({settlement}),
    )  # the other partner's folded
    assert (again.folded, again.out_of_range) == (0, frozenset({settlement}))
    balance = f"SELECT {BALANCE} FROM accounts a WHERE account_id = :s"
    assert await count(clean_db, balance, s=settlement) == -2 * most  # nothing lost
    assert await ledger_violations(clean_db) == []
    assert [(v.invariant, v.account_id) for v in report.violations] == [
        (LedgerInvariant.BALANCE_IN_RANGE, settlement)
    ]
    assert listing.value.reason == Reason.AMOUNT_OVERFLOW

    # Money back the other way brings the sum into range, and it folds.
    await services.reverse_transaction(
        services.ReverseTransaction(
            caller=auditor, request_id=uuid4(), transaction_id=first.transaction_id, reason="x"
        ),
        uow(),
    )
    folded = await services.fold_balance_deltas(uow())
    report = await services.verify_ledger(services.VerifyLedger(caller=auditor), uow())

    assert (folded.folded, folded.out_of_range) == (3, frozenset())
    assert (
        await count(clean_db, "SELECT posted FROM accounts WHERE account_id = :s", s=settlement)
        == -most
    )
    assert await count(clean_db, "SELECT count(*) FROM balance_deltas") == 0
    assert list(report.violations) == []


async def test_an_out_of_range_account_keeps_few_changes_and_does_not_hold_up_others(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    most = 2**63 - 1
    alice, bob, carol = [await ledger.user(name) for name in ("alice", "bob", "carol")]
    a, b, c = [await ledger.account(user) for user in (alice, bob, carol)]
    bank, other = await ledger.partner("bank"), await ledger.partner("other")
    await services.deposit(deposit(bank, a, most), uow())
    await services.deposit(deposit(bank, b, most), uow())
    for _ in range(5):
        await services.deposit(deposit(bank, c, 1_000), uow())
    await services.deposit(deposit(other, c, 7), uow())  # queued behind the bank's seven
    settlement = await settlement_of(clean_db, bank)
    changes = "SELECT count(*) FROM balance_deltas WHERE account_id = :s"
    balance = f"SELECT {BALANCE} FROM accounts a WHERE account_id = :s"

    kept = await services.fold_balance_deltas(uow(), limit=2)
    merged = await count(clean_db, changes, s=settlement)
    behind = await services.fold_balance_deltas(uow(), limit=2)

    assert (kept.taken, kept.folded, kept.out_of_range) == (2, 0, frozenset({settlement}))
    assert merged == 3  # two of -(2^63 - 1) and the rest, instead of seven
    assert behind.folded == 1
    row = "SELECT posted FROM accounts WHERE account_id = :s"
    assert await count(clean_db, row, s=await settlement_of(clean_db, other)) == -7
    assert await count(clean_db, balance, s=settlement) == -2 * most - 5_000
    assert await ledger_violations(clean_db) == []
