"""Transfers and deposits on the real database: double entry, ownership, concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from uuid import UUID, uuid4

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.conftest import Ledger
from tests.ledger_checks import BALANCE, count, ledger_violations
from wallet_server import services
from wallet_server.domain import (
    FailedPrecondition,
    Money,
    NotFound,
    Reason,
    TransactionStatus,
    UserPrincipal,
)


def transfer_cmd(
    caller: UserPrincipal,
    source: UUID,
    destination: UUID | None,
    amount_minor: int,
    *,
    request_id: UUID | None = None,
    to_username: str | None = None,
    currency: str = "USD",
    memo: str = "",
) -> services.Transfer:
    return services.Transfer(
        caller=caller,
        request_id=request_id or uuid4(),
        from_account_id=source,
        to_account_id=destination,
        to_username=to_username,
        amount=Money(currency, amount_minor),
        memo=memo,
    )


async def test_deposit_then_transfer_moves_money_with_balanced_postings(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice, bob = await ledger.user("alice"), await ledger.user("bob")
    a, b = await ledger.account(alice), await ledger.account(bob)
    partner = await ledger.partner()
    await ledger.deposit(partner, a, 10_000)

    tx = await services.transfer(transfer_cmd(alice, a, b, 2_550, memo="lunch"), uow())

    assert tx.status is TransactionStatus.POSTED
    assert sorted(p.amount for p in tx.postings) == [-2_550, 2_550]
    assert await ledger.balance(alice, a) == 7_450
    assert await ledger.balance(bob, b) == 2_550
    assert await ledger_violations(clean_db) == []
    # The partner's settlement account is negative by what it paid in (system accounts may be).
    assert (
        await count(clean_db, f"SELECT {BALANCE} FROM accounts a WHERE kind = 'settlement'")
        == -10_000
    )


async def test_transfer_by_username_lands_in_that_users_account_of_the_currency(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork]
) -> None:
    alice, bob = await ledger.user("alice"), await ledger.user("bob")
    a = await ledger.account(alice)
    await ledger.account(bob, "EUR")
    b_usd = await ledger.account(bob, "USD")
    await ledger.deposit(await ledger.partner(), a, 500)

    tx = await services.transfer(transfer_cmd(alice, a, None, 200, to_username="BOB"), uow())

    assert tx.to_account_id == b_usd
    assert await ledger.balance(bob, b_usd) == 200


async def test_refusals_change_nothing(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice, bob = await ledger.user("alice"), await ledger.user("bob")
    a, b = await ledger.account(alice), await ledger.account(bob)
    b_eur = await ledger.account(bob, "EUR")
    await ledger.deposit(await ledger.partner(), a, 1_000)
    before = await count(clean_db, "SELECT count(*) FROM postings")

    cases = [
        (transfer_cmd(alice, a, b, 1_001), FailedPrecondition, Reason.INSUFFICIENT_FUNDS),
        (transfer_cmd(alice, a, b_eur, 10), FailedPrecondition, Reason.CURRENCY_MISMATCH),
        (transfer_cmd(alice, a, a, 10), FailedPrecondition, Reason.SAME_ACCOUNT),
        # Bob's account exists, but it is not Alice's to spend from.
        (transfer_cmd(alice, b, a, 10), NotFound, Reason.NOT_FOUND),
        (transfer_cmd(alice, a, uuid4(), 10), NotFound, Reason.NOT_FOUND),
        (transfer_cmd(alice, a, None, 10, to_username="nobody"), NotFound, Reason.NOT_FOUND),
    ]
    for cmd, error, reason in cases:
        with pytest.raises(error) as caught:
            await services.transfer(cmd, uow())
        assert caught.value.reason == reason, cmd

    assert await count(clean_db, "SELECT count(*) FROM postings") == before
    assert await ledger.balance(alice, a) == 1_000
    assert await ledger_violations(clean_db) == []


async def test_other_users_account_is_not_found_not_forbidden(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork]
) -> None:
    alice, bob = await ledger.user("alice"), await ledger.user("bob")
    b = await ledger.account(bob)
    with pytest.raises(NotFound):
        await services.get_account(services.GetAccount(caller=alice, account_id=b), uow())
    with pytest.raises(NotFound):
        await services.list_transactions(
            services.ListTransactions(
                caller=alice,
                account_id=b,
                page_size=10,
                before_seq=None,
                start_time=None,
                end_time=None,
                kinds=(),
            ),
            uow(),
        )


async def test_forty_concurrent_transfers_from_75_give_exactly_15_successes(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice = await ledger.user("alice")
    a = await ledger.account(alice)
    receivers = [await ledger.account(await ledger.user(f"user{i}")) for i in range(4)]
    await ledger.deposit(await ledger.partner(), a, 7_500)

    async def one(i: int) -> str:
        try:
            await services.transfer(transfer_cmd(alice, a, receivers[i % 4], 500), uow())
        except FailedPrecondition as exc:
            return str(exc.reason)
        return "OK"

    outcomes = await asyncio.gather(*(one(i) for i in range(40)))

    assert outcomes.count("OK") == 15
    assert outcomes.count(Reason.INSUFFICIENT_FUNDS) == 25
    assert await ledger.balance(alice, a) == 0
    assert await count(clean_db, "SELECT count(*) FROM transactions WHERE kind = 'transfer'") == 15
    assert await ledger_violations(clean_db) == []


async def test_concurrent_transfers_in_both_directions_do_not_deadlock(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice, bob = await ledger.user("alice"), await ledger.user("bob")
    a, b = await ledger.account(alice), await ledger.account(bob)
    partner = await ledger.partner()
    await ledger.deposit(partner, a, 10_000)
    await ledger.deposit(partner, b, 10_000)

    await asyncio.gather(
        *(
            services.transfer(
                transfer_cmd(alice, a, b, 7) if i % 2 else transfer_cmd(bob, b, a, 5), uow()
            )
            for i in range(60)
        )
    )

    assert await ledger.balance(alice, a) == 10_000 - 30 * 7 + 30 * 5
    assert await ledger.balance(bob, b) == 10_000 + 30 * 7 - 30 * 5
    assert await ledger_violations(clean_db) == []
