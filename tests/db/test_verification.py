"""VerifyLedger on the real database: silent on a healthy ledger; for each invariant, one row
corrupted by direct SQL (bypassing triggers and constraints as an attacker or a bug with
database access could) is reported, and nothing else is."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from uuid import UUID, uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.conftest import Ledger
from tests.db.test_batch import batch, item, settlement
from tests.ledger_checks import count
from wallet_server import services
from wallet_server.domain import (
    LedgerInvariant,
    Money,
    OperatorPrincipal,
    Transaction,
    TransactionKind,
    TransactionStatus,
)
from wallet_server.storage import metadata

UowFactory = Callable[[], services.UnitOfWork]
OPERATOR = OperatorPrincipal(operator_id=uuid4(), name="auditor")


@dataclass
class Books:
    a: UUID  # alice: 3000 deposited in two deposits, 300 of it held by a pending payout
    b: UUID  # bob: 250 from a batch
    settlement: UUID
    first_deposit: UUID  # 1000 to alice
    pending: UUID  # alice's 300 PENDING outgoing transaction


async def deposit_id(uow: UowFactory, ledger: Ledger, partner: object, account: UUID) -> UUID:
    await ledger.deposit(partner, account, 1_000)  # type: ignore[arg-type]
    async with uow() as u:
        row = await u.connection.execute(
            text("SELECT transaction_id FROM transactions ORDER BY seq DESC LIMIT 1")
        )
        found: UUID = row.scalar_one()
    return found


@pytest.fixture
async def books(ledger: Ledger, uow: UowFactory) -> Books:
    alice, bob = await ledger.user("alice"), await ledger.user("bob")
    a, b = await ledger.account(alice), await ledger.account(bob)
    partner = await ledger.partner()
    first = await deposit_id(uow, ledger, partner, a)
    await ledger.deposit(partner, a, 2_000)
    s = await settlement(uow, partner)
    await services.create_transfers(batch(partner, [item(s, b, 250)]), uow())
    await services.transfer(
        services.Transfer(alice, uuid4(), a, b, None, Money("USD", 1), "x"), uow()
    )
    await services.transfer(
        services.Transfer(bob, uuid4(), b, a, None, Money("USD", 1), "y"), uow()
    )
    # A payout awaiting its partner: funds held, no postings yet.
    pending = uuid4()
    async with uow() as u:
        locked = await u.ledger.lock_accounts([a, s])
        assert locked[a].available >= 300
        now = u.now()
        await u.ledger.record(
            Transaction(
                transaction_id=pending,
                kind=TransactionKind.WITHDRAWAL,
                status=TransactionStatus.PENDING,
                amount=Money("USD", 300),
                from_account_id=a,
                to_account_id=s,
                memo="",
                external_reference="",
                created_at=now,
                posted_at=None,
                postings=(),
                partner_id=partner.partner_id,
            ),
            initiator="test",
            holds={a: 300},
        )
        await u.commit()
    return Books(a=a, b=b, settlement=s, first_deposit=first, pending=pending)


async def verify(uow: UowFactory) -> services.LedgerReport:
    return await services.verify_ledger(services.VerifyLedger(caller=OPERATOR), uow())


def found(report: services.LedgerReport) -> list[tuple[LedgerInvariant, UUID | None, UUID | None]]:
    return [(v.invariant, v.account_id, v.transaction_id) for v in report.violations]


async def corrupt(engine: AsyncEngine, *statements: str, **params: object) -> None:
    """Run statements committed, with triggers off (the append-only guard of postings)."""
    async with engine.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        for statement in statements:
            await conn.execute(text(statement), params)


@asynccontextmanager
async def without_constraint(engine: AsyncEngine, table: str, name: str) -> AsyncIterator[None]:
    """Drop a constraint for the block; afterwards empty the tables and put it back."""
    async with engine.begin() as conn:
        definition = (
            await conn.execute(
                text(
                    "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                    "WHERE conname = :name AND conrelid = CAST(:table AS regclass)"
                ),
                {"name": name, "table": table},
            )
        ).scalar_one()
        await conn.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT {name}"))
    try:
        yield
    finally:
        tables = ", ".join(t.name for t in metadata.sorted_tables)
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            await conn.execute(text(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}"))


async def test_a_healthy_ledger_has_no_violations(
    books: Books, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    report = await verify(uow)
    assert report.violations == ()
    assert report.accounts_checked == await count(clean_db, "SELECT count(*) FROM accounts")
    assert report.transactions_checked == await count(clean_db, "SELECT count(*) FROM transactions")
    assert report.transactions_checked == 6


async def test_unbalanced_postings(books: Books, uow: UowFactory, clean_db: AsyncEngine) -> None:
    # The settlement leg of the first deposit shrinks; the stored balance follows it, so only
    # the transaction itself is unbalanced.
    await corrupt(
        clean_db,
        "UPDATE postings SET amount = amount + 10 WHERE transaction_id = :t AND account_id = :s",
        "UPDATE accounts SET posted = posted + 10 WHERE account_id = :s",
        t=books.first_deposit,
        s=books.settlement,
    )
    report = await verify(uow)
    # The settlement was debited less than the deposit says, too.
    assert found(report) == [
        (LedgerInvariant.BALANCED_POSTINGS, None, books.first_deposit),
        (LedgerInvariant.POSTINGS_MATCH_TRANSACTION, None, books.first_deposit),
    ]
    violation = report.violations[0]
    assert (violation.expected, violation.actual) == (Money("USD", 0), Money("USD", 10))


async def test_stored_posted_balance_drift(
    books: Books, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    await corrupt(
        clean_db, "UPDATE accounts SET posted = posted + 5 WHERE account_id = :a", a=books.b
    )
    report = await verify(uow)
    assert found(report) == [(LedgerInvariant.POSTED_BALANCE, books.b, None)]
    (violation,) = report.violations
    assert (violation.expected, violation.actual) == (Money("USD", 250), Money("USD", 255))


async def test_pending_out_not_matching_the_open_holds(
    books: Books, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    await corrupt(
        clean_db, "UPDATE accounts SET pending_out = 250 WHERE account_id = :a", a=books.a
    )
    report = await verify(uow)
    assert found(report) == [(LedgerInvariant.PENDING_BALANCE, books.a, None)]
    (violation,) = report.violations
    assert (violation.expected, violation.actual) == (Money("USD", 300), Money("USD", 250))


async def test_a_hold_released_without_its_transaction_leaving_pending(
    books: Books, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    await corrupt(clean_db, "UPDATE accounts SET pending_out = 0 WHERE account_id = :a", a=books.a)
    assert found(await verify(uow)) == [(LedgerInvariant.PENDING_BALANCE, books.a, None)]


async def test_user_account_below_zero(
    books: Books, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    # The hold grows beyond the balance, consistently with its transaction: only the
    # "never below zero" rule is broken (the schema's own check has to be dropped for that).
    async with without_constraint(clean_db, "accounts", "ck_accounts_user_not_negative"):
        await corrupt(
            clean_db,
            "UPDATE transactions SET amount = 3500 WHERE transaction_id = :t",
            "UPDATE accounts SET pending_out = 3500 WHERE account_id = :a",
            t=books.pending,
            a=books.a,
        )
        report = await verify(uow)
        assert found(report) == [(LedgerInvariant.NON_NEGATIVE, books.a, None)]
        (violation,) = report.violations
        assert violation.actual == Money("USD", -500)
        assert "available" in violation.description


async def test_negative_pending_out_on_a_system_account(
    books: Books, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    await corrupt(
        clean_db,
        "UPDATE accounts SET pending_out = -7 WHERE account_id = :s",
        s=books.settlement,
    )
    assert found(await verify(uow)) == [
        (LedgerInvariant.PENDING_BALANCE, books.settlement, None),
        (LedgerInvariant.NON_NEGATIVE, books.settlement, None),
    ]


async def test_posted_transaction_without_postings(
    books: Books, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    ghost = uuid4()
    await corrupt(
        clean_db,
        "INSERT INTO transactions (transaction_id, kind, status, currency, amount, "
        "from_account_id, to_account_id, initiator, posted_at) "
        "VALUES (:t, 'transfer', 'posted', 'USD', 40, :a, :b, 'test', now())",
        t=ghost,
        a=books.a,
        b=books.b,
    )
    assert found(await verify(uow)) == [(LedgerInvariant.POSTINGS_MATCH_STATUS, None, ghost)]


async def test_voided_transaction_with_postings(
    books: Books, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    await corrupt(
        clean_db,
        "UPDATE transactions SET status = 'voided' WHERE transaction_id = :t",
        t=books.first_deposit,
    )
    report = await verify(uow)
    assert found(report) == [(LedgerInvariant.POSTINGS_MATCH_STATUS, None, books.first_deposit)]
    assert "has 2 postings" in report.violations[0].description


async def test_transaction_reversed_twice(
    books: Books, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    reversals = [uuid4(), uuid4()]
    async with without_constraint(
        clean_db, "transactions", "uq_transactions_reverses_transaction_id"
    ):
        statements = []
        for n in range(2):
            statements += [
                "INSERT INTO transactions (transaction_id, kind, status, currency, amount, "
                "from_account_id, to_account_id, initiator, reverses_transaction_id, posted_at) "
                f"VALUES (:r{n}, 'reversal', 'posted', 'USD', 1000, :a, :s, 'test', :t, now())",
                "INSERT INTO postings (transaction_id, account_id, amount, currency) "
                f"VALUES (:r{n}, :a, -1000, 'USD'), (:r{n}, :s, 1000, 'USD')",
                "UPDATE accounts SET posted = posted - 1000 WHERE account_id = :a",
                "UPDATE accounts SET posted = posted + 1000 WHERE account_id = :s",
            ]
        await corrupt(
            clean_db,
            *statements,
            r0=reversals[0],
            r1=reversals[1],
            a=books.a,
            s=books.settlement,
            t=books.first_deposit,
        )
        report = await verify(uow)
        assert found(report) == [(LedgerInvariant.SINGLE_REVERSAL, None, books.first_deposit)]
        assert all(str(r) in report.violations[0].description for r in reversals)


async def test_every_corruption_at_once_is_reported_in_one_pass(
    books: Books, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    await corrupt(
        clean_db,
        "UPDATE accounts SET posted = posted + 5 WHERE account_id = :b",
        "UPDATE accounts SET pending_out = 0 WHERE account_id = :a",
        "UPDATE postings SET amount = amount + 1 WHERE transaction_id = :t AND account_id = :a",
        a=books.a,
        b=books.b,
        t=books.first_deposit,
    )
    assert {v.invariant for v in (await verify(uow)).violations} == {
        LedgerInvariant.BALANCED_POSTINGS,
        LedgerInvariant.POSTED_BALANCE,
        LedgerInvariant.PENDING_BALANCE,
        LedgerInvariant.POSTINGS_MATCH_TRANSACTION,
    }


async def test_a_rewritten_amount_on_a_posted_transaction(
    books: Books, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    # One row changed: the transaction now claims ten times what its legs moved.
    await corrupt(
        clean_db,
        "UPDATE transactions SET amount = amount * 10 WHERE transaction_id = :t",
        t=books.first_deposit,
    )
    assert found(await verify(uow)) == [
        (LedgerInvariant.POSTINGS_MATCH_TRANSACTION, None, books.first_deposit)
    ]


async def test_legs_in_a_currency_their_accounts_do_not_hold(
    books: Books, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    # Both legs re-labelled: each currency still sums to zero, balances still match.
    await corrupt(
        clean_db,
        "UPDATE postings SET currency = 'EUR' WHERE transaction_id = :t",
        t=books.first_deposit,
    )
    problems = found(await verify(uow))
    assert problems
    assert {p[0] for p in problems} == {LedgerInvariant.POSTINGS_MATCH_TRANSACTION}
    assert {p[2] for p in problems} == {books.first_deposit}


async def test_money_credited_to_someone_other_than_the_transaction_says(
    books: Books, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    # The deposit's credit leg moved to bob, balances adjusted to match: only the header knows.
    await corrupt(
        clean_db,
        "UPDATE postings SET account_id = :b WHERE transaction_id = :t AND account_id = :a",
        "UPDATE accounts SET posted = posted - 1000 WHERE account_id = :a",
        "UPDATE accounts SET posted = posted + 1000 WHERE account_id = :b",
        a=books.a,
        b=books.b,
        t=books.first_deposit,
    )
    assert found(await verify(uow)) == [
        (LedgerInvariant.POSTINGS_MATCH_TRANSACTION, None, books.first_deposit)
    ]
