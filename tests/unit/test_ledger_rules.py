"""The pure double-entry rules: who may send what to whom, and the legs that result."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet_server.domain import (
    INT64_MAX,
    Account,
    AccountKind,
    FailedPrecondition,
    Money,
    Reason,
    check_balanced,
    plan_transfer,
)


def account(kind: AccountKind = AccountKind.USER, posted: int = 0, **kw: Any) -> Account:
    base = Account(
        account_id=uuid4(),
        kind=kind,
        currency="USD",
        owner_user_id=uuid4() if kind is AccountKind.USER else None,
        partner_id=None,
        posted=posted,
        pending_out=0,
        frozen=False,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return replace(base, **kw)


@given(
    balance=st.integers(min_value=0, max_value=10**12),
    held=st.integers(min_value=0, max_value=10**12),
    amount=st.integers(min_value=1, max_value=10**12),
)
def test_a_user_can_spend_exactly_what_is_available(balance: int, held: int, amount: int) -> None:
    source = account(posted=balance + held, pending_out=held)
    destination = account()
    if amount <= balance:
        legs = plan_transfer(source, destination, Money("USD", amount))
        assert [(leg.account_id, leg.amount) for leg in legs] == [
            (source.account_id, -amount),
            (destination.account_id, amount),
        ]
        check_balanced(legs)
    else:
        with pytest.raises(FailedPrecondition) as caught:
            plan_transfer(source, destination, Money("USD", amount))
        assert caught.value.reason == Reason.INSUFFICIENT_FUNDS


def test_system_accounts_may_go_negative() -> None:
    settlement = account(AccountKind.SETTLEMENT, posted=0)
    legs = plan_transfer(settlement, account(), Money("USD", 500))
    assert legs[0].amount == -500


@pytest.mark.parametrize(
    ("source_kw", "destination_kw", "amount", "reason"),
    [
        ({"frozen": True, "posted": 100}, {}, Money("USD", 1), Reason.ACCOUNT_FROZEN),
        ({"posted": 100}, {"frozen": True}, Money("USD", 1), Reason.ACCOUNT_FROZEN),
        ({"posted": 100}, {"currency": "EUR"}, Money("USD", 1), Reason.CURRENCY_MISMATCH),
        ({"posted": 100}, {}, Money("EUR", 1), Reason.CURRENCY_MISMATCH),
        ({"posted": 100}, {"posted": INT64_MAX}, Money("USD", 1), Reason.AMOUNT_OVERFLOW),
    ],
)
def test_refusals_name_their_reason(
    source_kw: dict[str, Any], destination_kw: dict[str, Any], amount: Money, reason: str
) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        plan_transfer(account(**source_kw), account(**destination_kw), amount)
    assert caught.value.reason == reason


def test_frozen_wins_over_insufficient_funds_so_the_reason_is_stable() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        plan_transfer(account(frozen=True), account(), Money("USD", 10))
    assert caught.value.reason == Reason.ACCOUNT_FROZEN


def test_sending_to_the_same_account_is_refused() -> None:
    same = account(posted=100)
    with pytest.raises(FailedPrecondition) as caught:
        plan_transfer(same, same, Money("USD", 1))
    assert caught.value.reason == Reason.SAME_ACCOUNT


def test_unbalanced_or_zero_legs_are_rejected() -> None:
    from wallet_server.domain import Posting

    with pytest.raises(ValueError, match="sum to zero"):
        check_balanced((Posting(uuid4(), -5), Posting(uuid4(), 4)))
    with pytest.raises(ValueError, match="non-zero"):
        check_balanced((Posting(uuid4(), 0), Posting(uuid4(), 0)))


def test_a_system_account_cannot_underflow_int64() -> None:
    from wallet_server.domain import INT64_MIN

    settlement = account(AccountKind.SETTLEMENT, posted=INT64_MIN + 10)
    plan_transfer(settlement, account(), Money("USD", 10))
    with pytest.raises(FailedPrecondition) as caught:
        plan_transfer(settlement, account(), Money("USD", 11))
    assert caught.value.reason == Reason.AMOUNT_OVERFLOW


@given(
    posted=st.integers(min_value=-(10**15), max_value=10**15),
    held=st.integers(min_value=0, max_value=10**12),
    amount=st.integers(min_value=-(10**12), max_value=10**12),
)
def test_after_posting_changes_the_posted_balance_and_nothing_else(
    posted: int, held: int, amount: int
) -> None:
    before = account(posted=posted, pending_out=held, partner_id=uuid4(), frozen=True)
    assert before.after_posting(amount) == replace(before, posted=posted + amount)
