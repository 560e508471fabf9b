"""Reversals on the real database: opposite legs, history untouched, at most once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from uuid import UUID, uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.conftest import Ledger
from tests.db.test_exchange import exchange_cmd, funded_pair, quote, set_rate, snapshot
from tests.ledger_checks import BALANCE, count, ledger_violations
from wallet_server import services
from wallet_server.domain import (
    FailedPrecondition,
    Money,
    NotFound,
    OperatorPrincipal,
    Reason,
    Transaction,
    TransactionKind,
    TransactionStatus,
    UserPrincipal,
)

OPERATOR = OperatorPrincipal(operator_id=uuid4(), name="ops")


def reverse_cmd(
    transaction_id: UUID, request_id: UUID | None = None, reason: str = "operator correction"
) -> services.ReverseTransaction:
    return services.ReverseTransaction(
        caller=OPERATOR,
        request_id=request_id or uuid4(),
        transaction_id=transaction_id,
        reason=reason,
    )


async def send(
    uow: Callable[[], services.UnitOfWork],
    caller: UserPrincipal,
    source: UUID,
    destination: UUID,
    amount: int,
) -> Transaction:
    return await services.transfer(
        services.Transfer(
            caller=caller,
            request_id=uuid4(),
            from_account_id=source,
            to_account_id=destination,
            to_username=None,
            amount=Money("USD", amount),
            memo="",
        ),
        uow(),
    )


async def transaction_row(engine: AsyncEngine, transaction_id: UUID) -> tuple[object, ...]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT * FROM transactions WHERE transaction_id = :t"), {"t": transaction_id}
            )
        ).one()
    return tuple(row)


async def test_reversing_a_transfer_posts_the_opposite_legs_and_links_both_ways(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice, bob = await ledger.user("alice"), await ledger.user("bob")
    a, b = await ledger.account(alice), await ledger.account(bob)
    await ledger.deposit(await ledger.partner(), a, 1_000)
    original = await send(uow, alice, a, b, 300)
    row_before = await transaction_row(clean_db, original.transaction_id)

    reversal = await services.reverse_transaction(
        reverse_cmd(original.transaction_id, reason="sent to the wrong person"), uow()
    )

    assert (reversal.kind, reversal.status) == (TransactionKind.REVERSAL, TransactionStatus.POSTED)
    assert reversal.reverses_transaction_id == original.transaction_id
    assert (reversal.from_account_id, reversal.to_account_id) == (b, a)
    assert reversal.amount == Money("USD", 300)
    assert reversal.memo == "sent to the wrong person"
    assert [(p.account_id, p.amount) for p in reversal.postings] == [(a, 300), (b, -300)]
    assert await ledger.balance(alice, a) == 1_000
    assert await ledger.balance(bob, b) == 0

    # History is never edited: the original row is byte for byte what it was.
    assert await transaction_row(clean_db, original.transaction_id) == row_before
    for caller in (alice, bob):
        seen = await services.get_transaction(
            services.GetTransaction(caller=caller, transaction_id=original.transaction_id), uow()
        )
        assert seen.reversed_by_transaction_id == reversal.transaction_id
        assert seen.postings == original.postings
    assert (
        await count(
            clean_db,
            "SELECT count(*) FROM outbox WHERE type = 'transaction_created' "
            "AND payload::json -> 'transaction' ->> 'transaction_id' = :t "
            "AND account_ids @> ARRAY[CAST(:a AS uuid), CAST(:b AS uuid)]",
            t=str(reversal.transaction_id),
            a=str(a),
            b=str(b),
        )
        == 1
    )
    assert await ledger_violations(clean_db) == []


async def test_reversing_an_exchange_returns_both_currencies_through_the_pools(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice, usd, jpy = await funded_pair(ledger)
    await set_rate(uow, "USD", "JPY", "151.37")
    q = await quote(uow(), alice, usd, jpy, sell=Money("USD", 1_000))
    exchange = await services.exchange_currency(exchange_cmd(alice, q.quote_id), uow())

    reversal = await services.reverse_transaction(reverse_cmd(exchange.transaction_id), uow())

    # What leaves now is what arrived then, and the other way round.
    assert (reversal.from_account_id, reversal.to_account_id) == (jpy, usd)
    assert (reversal.amount, reversal.to_amount) == (Money("JPY", 1_513), Money("USD", 1_000))
    assert sorted((p.currency, p.amount) for p in reversal.postings) == [
        ("JPY", -1_513),
        ("JPY", 1_513),
        ("USD", -1_000),
        ("USD", 1_000),
    ]
    assert await ledger.balance(alice, usd) == 10_000
    assert await ledger.balance(alice, jpy) == 0
    assert await count(clean_db, "SELECT count(*) FROM accounts WHERE kind = 'fx_pool'") == 2
    assert (
        await count(
            clean_db, "SELECT count(*) FROM accounts WHERE posted <> 0 AND kind = 'fx_pool'"
        )
        == 0
    )
    assert await ledger_violations(clean_db) == []


async def test_reversing_a_deposit_takes_it_back_to_the_partner_even_from_a_frozen_account(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice = await ledger.user("alice")
    a = await ledger.account(alice)
    partner = await ledger.partner()
    await ledger.deposit(partner, a, 700)
    deposit_id = UUID(
        str(
            await _scalar(
                clean_db, "SELECT transaction_id FROM transactions WHERE kind = 'deposit'"
            )
        )
    )
    async with clean_db.begin() as conn:
        await conn.execute(
            text("UPDATE accounts SET frozen = true WHERE account_id = :a"), {"a": a}
        )

    reversal = await services.reverse_transaction(reverse_cmd(deposit_id), uow())

    assert reversal.partner_id == partner.partner_id  # on the partner's event stream too
    assert await ledger.balance(alice, a) == 0
    assert await count(clean_db, f"SELECT {BALANCE} FROM accounts a WHERE kind = 'settlement'") == 0
    assert (
        await count(
            clean_db,
            "SELECT count(*) FROM outbox WHERE partner_id = :p "
            "AND payload::json -> 'transaction' ->> 'transaction_id' = :t",
            p=partner.partner_id,
            t=str(reversal.transaction_id),
        )
        == 1
    )
    assert await ledger_violations(clean_db) == []


async def _scalar(engine: AsyncEngine, query: str) -> object:
    async with engine.connect() as conn:
        return (await conn.execute(text(query))).scalar_one()


async def _record(uow: services.UnitOfWork, tx: Transaction, holds: dict[UUID, int]) -> None:
    async with uow:
        await uow.ledger.record(tx, initiator="test", holds=holds)
        await uow.commit()


async def test_refusals_change_nothing(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice, bob, carol = (
        await ledger.user("alice"),
        await ledger.user("bob"),
        await ledger.user("carol"),
    )
    a, b, c = await ledger.account(alice), await ledger.account(bob), await ledger.account(carol)
    await ledger.deposit(await ledger.partner(), a, 1_000)
    reversed_once = await send(uow, alice, a, b, 100)
    first_reversal = await services.reverse_transaction(
        reverse_cmd(reversed_once.transaction_id), uow()
    )
    spent = await send(uow, alice, a, b, 200)
    await send(uow, bob, b, c, 150)  # bob has 50 left of the 200
    partly_held = await send(uow, alice, a, c, 300)
    pending = Transaction(
        transaction_id=uuid4(),
        kind=TransactionKind.WITHDRAWAL,
        status=TransactionStatus.PENDING,
        amount=Money("USD", 200),
        from_account_id=c,
        to_account_id=None,
        memo="",
        external_reference="",
        created_at=partly_held.created_at,
        posted_at=None,
        postings=(),
    )
    voided = replace(pending, transaction_id=uuid4(), status=TransactionStatus.VOIDED)
    await _record(uow(), pending, {c: 200})  # carol holds 200 of her 450: 250 available
    await _record(uow(), voided, {})
    before = await snapshot(clean_db)

    cases = [
        (uuid4(), NotFound, Reason.NOT_FOUND, "not found"),
        (reversed_once.transaction_id, FailedPrecondition, "FAILED_PRECONDITION", "already"),
        (first_reversal.transaction_id, FailedPrecondition, "FAILED_PRECONDITION", "reversal"),
        (pending.transaction_id, FailedPrecondition, "FAILED_PRECONDITION", "PENDING"),
        (voided.transaction_id, FailedPrecondition, "FAILED_PRECONDITION", "VOIDED"),
        # The money was spent: bob would go negative.
        (spent.transaction_id, FailedPrecondition, Reason.INSUFFICIENT_FUNDS, "available"),
        # Held funds are not available: 250 of carol's 450 for a reversal of 300.
        (partly_held.transaction_id, FailedPrecondition, Reason.INSUFFICIENT_FUNDS, "available"),
    ]
    for transaction_id, error, reason, words in cases:
        with pytest.raises(error) as caught:
            await services.reverse_transaction(reverse_cmd(transaction_id), uow())
        assert caught.value.reason == reason, transaction_id
        assert words in caught.value.message
        assert await snapshot(clean_db) == before

    assert await ledger_violations(clean_db) == []


async def test_replays_return_the_same_reversal(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice, bob = await ledger.user("alice"), await ledger.user("bob")
    a, b = await ledger.account(alice), await ledger.account(bob)
    await ledger.deposit(await ledger.partner(), a, 1_000)
    original = await send(uow, alice, a, b, 100)
    request_id = uuid4()

    first = await services.reverse_transaction(
        reverse_cmd(original.transaction_id, request_id), uow()
    )
    again = await services.reverse_transaction(
        reverse_cmd(original.transaction_id, request_id), uow()
    )
    assert again == first
    with pytest.raises(FailedPrecondition) as reused:
        await services.reverse_transaction(
            reverse_cmd(original.transaction_id, request_id, reason="another reason"), uow()
        )
    assert reused.value.reason == Reason.IDEMPOTENCY_KEY_REUSED
    assert await count(clean_db, "SELECT count(*) FROM transactions WHERE kind = 'reversal'") == 1


async def test_concurrent_reversals_of_one_transaction_post_exactly_one(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice, bob = await ledger.user("alice"), await ledger.user("bob")
    a, b = await ledger.account(alice), await ledger.account(bob)
    await ledger.deposit(await ledger.partner(), a, 1_000)
    original = await send(uow, alice, a, b, 400)

    async def one() -> str:
        try:
            await services.reverse_transaction(reverse_cmd(original.transaction_id), uow())
        except FailedPrecondition as exc:
            return str(exc.reason)
        return "OK"

    outcomes = await asyncio.gather(*(one() for _ in range(24)))

    assert outcomes.count("OK") == 1
    assert outcomes.count("FAILED_PRECONDITION") == 23
    assert await count(clean_db, "SELECT count(*) FROM transactions WHERE kind = 'reversal'") == 1
    assert await ledger.balance(alice, a) == 1_000
    assert await ledger.balance(bob, b) == 0
    assert await ledger_violations(clean_db) == []
