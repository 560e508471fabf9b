"""The pure rules of cashback promotions: the amount, who qualifies, the budget, the terms."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet_server.domain import (
    InvalidArgument,
    Money,
    Promotion,
    PromotionStatus,
    best_cashback,
    cashback_minor,
    end_promotion_at,
    spend_promotion_budget,
    validate_promotion_terms,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MERCHANT = uuid4()


def promotion(
    bp: int = 500,
    cap: int = 1_000,
    budget: int = 10_000,
    spent: int = 0,
    currency: str = "USD",
    **kw: Any,
) -> Promotion:
    base = Promotion(
        promotion_id=uuid4(),
        display_name="Spring 5% back",
        cashback_basis_points=bp,
        max_cashback_per_payment=Money(currency, cap),
        budget=Money(currency, budget),
        spent=Money(currency, spent),
        min_payment_amount=None,
        merchant_partner_ids=(),
        merchant_names=(),
        start_time=NOW - timedelta(days=1),
        end_time=NOW + timedelta(days=1),
        ended_at=None,
        funding_account_id=uuid4(),
        created_at=NOW - timedelta(days=2),
    )
    return replace(base, **kw)


# --- the amount -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "payment", "bp", "expected"),
    [
        # JPY has no minor unit below the yen: 1% of 99 yen is 0.99 yen, which pays nothing.
        ("JPY", 99, 100, 0),
        ("JPY", 100, 100, 1),
        ("JPY", 12_345, 333, 411),  # 411.0885
        # USD cents: 5% of 19.99 is 0.9995, floored to 0.99.
        ("USD", 1_999, 500, 99),
        ("USD", 2_000, 500, 100),
        ("USD", 1, 9_999, 0),  # 0.9999 cent
        ("USD", 1, 10_000, 1),  # 100% back
        # KWD fils (3 decimals): 2.5% of 1.999 KWD is 0.049975, floored to 0.049.
        ("KWD", 1_999, 250, 49),
        ("KWD", 40, 250, 1),
        ("KWD", 39, 250, 0),
    ],
)
def test_cashback_is_floored_to_a_whole_minor_unit(
    currency: str, payment: int, bp: int, expected: int
) -> None:
    p = promotion(bp=bp, cap=10**9, budget=10**9, currency=currency)
    assert p.cashback_for(Money(currency, payment), MERCHANT, NOW) == Money(currency, expected)


def test_cashback_is_capped_per_payment_and_by_what_remains_of_the_budget() -> None:
    assert cashback_minor(100_000, basis_points=500, cap=1_000, remaining=10**9) == 1_000
    assert cashback_minor(100_000, basis_points=500, cap=1_000, remaining=250) == 250
    assert cashback_minor(100_000, basis_points=500, cap=1_000, remaining=0) == 0
    p = promotion(cap=300, budget=1_000, spent=900)
    assert p.cashback_for(Money("USD", 100_000), MERCHANT, NOW) == Money("USD", 100)


@given(
    payment=st.integers(min_value=1, max_value=2**63 - 1),
    bp=st.integers(min_value=1, max_value=10_000),
    cap=st.integers(min_value=1, max_value=2**63 - 1),
    remaining=st.integers(min_value=0, max_value=2**63 - 1),
)
def test_cashback_never_exceeds_any_bound_and_is_the_largest_within_them(
    payment: int, bp: int, cap: int, remaining: int
) -> None:
    got = cashback_minor(payment, basis_points=bp, cap=cap, remaining=remaining)
    assert 0 <= got <= min(cap, remaining, payment)
    assert got * 10_000 <= payment * bp  # never more than the exact share
    if got < min(cap, remaining):
        assert (got + 1) * 10_000 > payment * bp  # and the floor, not less


# --- who qualifies --------------------------------------------------------------------------


def test_status_follows_the_period_the_budget_and_the_operator() -> None:
    p = promotion()
    assert p.status_at(p.start_time - timedelta(microseconds=1)) is PromotionStatus.SCHEDULED
    assert p.status_at(p.start_time) is PromotionStatus.ACTIVE
    assert p.status_at(p.end_time) is PromotionStatus.ENDED
    assert replace(p, spent=p.budget).status_at(NOW) is PromotionStatus.EXHAUSTED
    assert end_promotion_at(p, NOW).status_at(NOW) is PromotionStatus.ENDED


@pytest.mark.parametrize(
    ("change", "payment", "at", "qualifies"),
    [
        ({}, Money("USD", 1_000), NOW, True),
        ({}, Money("EUR", 1_000), NOW, False),  # another currency
        ({"start_time": NOW}, Money("USD", 1_000), NOW, True),  # start is inclusive
        ({"end_time": NOW}, Money("USD", 1_000), NOW, False),  # end is exclusive
        ({"start_time": NOW + timedelta(seconds=1)}, Money("USD", 1_000), NOW, False),
        ({"ended_at": NOW - timedelta(seconds=1)}, Money("USD", 1_000), NOW, False),
        ({"spent": Money("USD", 10_000)}, Money("USD", 1_000), NOW, False),
        ({"min_payment_amount": Money("USD", 1_000)}, Money("USD", 1_000), NOW, True),
        ({"min_payment_amount": Money("USD", 1_001)}, Money("USD", 1_000), NOW, False),
        ({"merchant_partner_ids": (MERCHANT,)}, Money("USD", 1_000), NOW, True),
        ({"merchant_partner_ids": (uuid4(),)}, Money("USD", 1_000), NOW, False),
    ],
)
def test_which_payments_qualify(
    change: dict[str, Any], payment: Money, at: datetime, qualifies: bool
) -> None:
    p = replace(promotion(), **change)
    assert p.qualifies(payment, MERCHANT, at) is qualifies
    assert p.cashback_for(payment, MERCHANT, at).is_positive() is qualifies


def test_the_promotion_paying_the_most_is_chosen() -> None:
    small = promotion(bp=100)
    large = promotion(bp=1_000, cap=60)  # 10% but capped at 60
    medium = promotion(bp=500)  # 5% of 1000 = 50
    elsewhere = promotion(bp=5_000, merchant_partner_ids=(uuid4(),))
    chosen = best_cashback([small, medium, large, elsewhere], Money("USD", 1_000), MERCHANT, NOW)
    assert chosen == (large, Money("USD", 60))


def test_a_tie_goes_to_the_older_promotion_and_nothing_pays_nothing() -> None:
    older = promotion(created_at=NOW - timedelta(days=5))
    newer = promotion(created_at=NOW - timedelta(days=1))
    assert best_cashback([newer, older], Money("USD", 1_000), MERCHANT, NOW) == (
        older,
        Money("USD", 50),
    )
    # 5% of 19 cents is 0.95 cent: nothing to pay, so no promotion is chosen.
    assert best_cashback([older, newer], Money("USD", 19), MERCHANT, NOW) is None
    assert best_cashback([], Money("USD", 1_000), MERCHANT, NOW) is None


# --- the budget and ending ------------------------------------------------------------------


def test_spending_adds_up_and_never_passes_the_budget() -> None:
    p = spend_promotion_budget(promotion(budget=100, spent=40), Money("USD", 60))
    assert p.spent == Money("USD", 100)
    assert p.status_at(NOW) is PromotionStatus.EXHAUSTED
    with pytest.raises(ValueError, match="budget"):
        spend_promotion_budget(promotion(budget=100, spent=40), Money("USD", 61))
    with pytest.raises(ValueError, match="positive"):
        spend_promotion_budget(promotion(), Money("USD", 0))


def test_ending_an_ended_promotion_changes_nothing() -> None:
    p = end_promotion_at(promotion(), NOW)
    assert p.ended_at == NOW
    assert end_promotion_at(p, NOW + timedelta(hours=1)) == p
    past = promotion(end_time=NOW - timedelta(seconds=1), start_time=NOW - timedelta(days=3))
    assert end_promotion_at(past, NOW) == past


# --- terms ----------------------------------------------------------------------------------


def terms(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "display_name": "Spring",
        "cashback_basis_points": 500,
        "max_cashback_per_payment": Money("USD", 500),
        "budget": Money("USD", 100_000),
        "min_payment_amount": None,
        "start_time": NOW,
        "end_time": NOW + timedelta(days=30),
        "now": NOW,
    }
    base.update(kw)
    return base


def test_sound_terms_pass() -> None:
    validate_promotion_terms(**terms())
    validate_promotion_terms(**terms(cashback_basis_points=1, min_payment_amount=Money("USD", 1)))
    validate_promotion_terms(**terms(cashback_basis_points=10_000))
    # A period that started in the past is fine as long as it has not ended.
    validate_promotion_terms(**terms(start_time=NOW - timedelta(days=1)))


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"display_name": "  "}, {"display_name"}),
        ({"display_name": "x" * 101}, {"display_name"}),
        ({"cashback_basis_points": 0}, {"cashback_basis_points"}),
        ({"cashback_basis_points": 10_001}, {"cashback_basis_points"}),
        ({"cashback_basis_points": -5}, {"cashback_basis_points"}),
        ({"max_cashback_per_payment": Money("USD", 0)}, {"max_cashback_per_payment.amount_minor"}),
        ({"budget": Money("USD", -1)}, {"budget.amount_minor"}),
        ({"min_payment_amount": Money("USD", 0)}, {"min_payment_amount.amount_minor"}),
        (
            {"max_cashback_per_payment": Money("EUR", 500)},
            {"max_cashback_per_payment.currency_code"},
        ),
        ({"min_payment_amount": Money("JPY", 500)}, {"min_payment_amount.currency_code"}),
        ({"end_time": NOW}, {"end_time"}),  # not after start
        (
            {"start_time": NOW - timedelta(days=3), "end_time": NOW - timedelta(days=1)},
            {"end_time"},  # in the past
        ),
        (
            {"cashback_basis_points": 0, "budget": Money("USD", 0), "end_time": NOW},
            {"cashback_basis_points", "budget.amount_minor", "end_time"},
        ),
    ],
)
def test_bad_terms_name_every_offending_field(change: dict[str, Any], fields: set[str]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_promotion_terms(**terms(**change))
    assert {v.field for v in caught.value.violations} == fields
