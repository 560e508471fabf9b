"""Reversal rules: the exact opposite legs, at most once, never below zero on a user wallet."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet_server.domain import (
    INT64_MAX,
    Account,
    AccountKind,
    FailedPrecondition,
    Money,
    Posting,
    Reason,
    Transaction,
    TransactionKind,
    TransactionStatus,
    check_balanced,
    check_reversible,
    plan_reversal,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def account(currency: str = "USD", posted: int = 0, **kw: Any) -> Account:
    kind = kw.pop("kind", AccountKind.USER)
    base = Account(
        account_id=uuid4(),
        kind=kind,
        currency=currency,
        owner_user_id=uuid4() if kind is AccountKind.USER else None,
        partner_id=None,
        posted=posted,
        pending_out=0,
        frozen=False,
        created_at=T0,
    )
    return replace(base, **kw)


def transfer(source: Account, destination: Account, amount: int, **kw: Any) -> Transaction:
    base = Transaction(
        transaction_id=uuid4(),
        kind=TransactionKind.TRANSFER,
        status=TransactionStatus.POSTED,
        amount=Money(source.currency, amount),
        from_account_id=source.account_id,
        to_account_id=destination.account_id,
        memo="",
        external_reference="",
        created_at=T0,
        posted_at=T0,
        postings=(
            Posting(source.account_id, -amount, source.currency),
            Posting(destination.account_id, amount, source.currency),
        ),
    )
    return replace(base, **kw)


def by_id(*accounts: Account) -> dict[UUID, Account]:
    return {a.account_id: a for a in accounts}


def test_a_reversal_negates_every_leg_of_an_exchange_in_its_currency() -> None:
    usd, jpy = account("USD"), account("JPY", posted=151)
    usd_pool = account("USD", kind=AccountKind.FX_POOL, posted=100)
    jpy_pool = account("JPY", kind=AccountKind.FX_POOL, posted=-151)
    original = transfer(
        usd,
        jpy,
        100,
        kind=TransactionKind.EXCHANGE,
        to_amount=Money("JPY", 151),
        postings=(
            Posting(usd.account_id, -100, "USD"),
            Posting(usd_pool.account_id, 100, "USD"),
            Posting(jpy_pool.account_id, -151, "JPY"),
            Posting(jpy.account_id, 151, "JPY"),
        ),
    )
    legs = plan_reversal(original, by_id(usd, jpy, usd_pool, jpy_pool), reversed_by=None)
    assert [(p.account_id, p.amount, p.currency) for p in legs] == [
        (usd.account_id, 100, "USD"),
        (usd_pool.account_id, -100, "USD"),
        (jpy_pool.account_id, 151, "JPY"),
        (jpy.account_id, -151, "JPY"),
    ]
    check_balanced(legs)


@given(
    available=st.integers(min_value=0, max_value=10**12),
    held=st.integers(min_value=0, max_value=10**12),
    amount=st.integers(min_value=1, max_value=10**12),
)
def test_a_reversal_takes_back_only_what_is_still_available(
    available: int, held: int, amount: int
) -> None:
    payer = account(posted=0)
    payee = account(posted=available + held, pending_out=held)
    original = transfer(payer, payee, amount)
    accounts = by_id(payer, payee)
    if amount <= available:
        legs = plan_reversal(original, accounts, reversed_by=None)
        assert {p.account_id: p.amount for p in legs} == {
            payer.account_id: amount,
            payee.account_id: -amount,
        }
    else:
        with pytest.raises(FailedPrecondition) as caught:
            plan_reversal(original, accounts, reversed_by=None)
        assert caught.value.reason == Reason.INSUFFICIENT_FUNDS


def test_system_accounts_may_go_negative_and_frozen_accounts_do_not_stop_a_reversal() -> None:
    settlement = account(kind=AccountKind.SETTLEMENT, posted=0)
    user = account(posted=500, frozen=True)
    # A withdrawal paid 500 to the partner; its reversal takes it back from the settlement.
    original = transfer(user, settlement, 500, kind=TransactionKind.WITHDRAWAL)
    legs = plan_reversal(original, by_id(settlement, user), reversed_by=None)
    assert {p.account_id: p.amount for p in legs} == {
        settlement.account_id: -500,
        user.account_id: 500,
    }


@pytest.mark.parametrize(
    ("changes", "reversed_by", "words"),
    [
        ({"status": TransactionStatus.PENDING, "postings": ()}, None, "PENDING"),
        ({"status": TransactionStatus.VOIDED, "postings": ()}, None, "VOIDED"),
        ({"status": TransactionStatus.HELD_FOR_REVIEW, "postings": ()}, None, "HELD_FOR_REVIEW"),
        ({"kind": TransactionKind.REVERSAL}, None, "a reversal cannot be reversed"),
        ({}, UUID(int=7), "already reversed by 00000000-0000-0000-0000-000000000007"),
    ],
)
def test_what_cannot_be_reversed(
    changes: dict[str, Any], reversed_by: UUID | None, words: str
) -> None:
    a, b = account(posted=0), account(posted=100)
    original = transfer(a, b, 100, **changes)
    with pytest.raises(FailedPrecondition) as caught:
        plan_reversal(original, by_id(a, b), reversed_by=reversed_by)
    assert caught.value.reason == "FAILED_PRECONDITION"
    assert words in caught.value.message


def test_a_reversal_that_would_overflow_a_balance_is_refused() -> None:
    a, b = account(posted=INT64_MAX - 10), account(posted=100)
    with pytest.raises(FailedPrecondition) as caught:
        plan_reversal(transfer(a, b, 100), by_id(a, b), reversed_by=None)
    assert caught.value.reason == Reason.AMOUNT_OVERFLOW


@pytest.mark.parametrize(
    "kind", [TransactionKind.PAYMENT, TransactionKind.REFUND, TransactionKind.CASHBACK]
)
def test_order_money_goes_back_through_refunds_not_reversals(kind: TransactionKind) -> None:
    original = transfer(account(posted=100), account(), 10, kind=kind)
    with pytest.raises(FailedPrecondition, match="RefundPayment"):
        check_reversible(original, reversed_by=None)
