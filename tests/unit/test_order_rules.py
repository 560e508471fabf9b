"""The pure rules of merchant orders: expiry, paying once, refunding up to what was paid."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet_server.domain import (
    Account,
    AccountKind,
    FailedPrecondition,
    InvalidArgument,
    Money,
    Order,
    OrderStatus,
    Reason,
    apply_refund,
    ensure_payable,
    expire_order,
    mark_order_paid,
    new_order,
    order_expiry,
    plan_payment,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def order(
    amount_minor: int = 1_000,
    currency: str = "USD",
    description: str = "two coffees",
    merchant_reference: str = "ref-1",
    **kw: Any,
) -> Order:
    base = new_order(
        order_id=uuid4(),
        partner_id=uuid4(),
        merchant_name="shop",
        amount=Money(currency, amount_minor),
        description=description,
        merchant_reference=merchant_reference,
        now=NOW,
        expires_at=NOW + timedelta(minutes=15),
    )
    return replace(base, **kw)


def paid(amount_minor: int = 1_000, **kw: Any) -> Order:
    return mark_order_paid(
        order(amount_minor, **kw), now=NOW, payer_account_id=uuid4(), transaction_id=uuid4()
    )


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
        created_at=NOW,
    )
    return replace(base, **kw)


def violation_fields(error: InvalidArgument) -> set[str]:
    return {v.field for v in error.violations}


# --- expiry ---------------------------------------------------------------------------------


def test_an_order_without_expiry_is_payable_for_15_minutes() -> None:
    assert order_expiry(NOW, expire_time=None, ttl=None) == NOW + timedelta(minutes=15)


def test_expiry_from_an_absolute_time_or_a_time_to_live() -> None:
    assert order_expiry(NOW, expire_time=NOW + timedelta(hours=2), ttl=None) == NOW + timedelta(
        hours=2
    )
    assert order_expiry(NOW, expire_time=None, ttl=timedelta(seconds=30)) == NOW + timedelta(
        seconds=30
    )
    # Exactly seven days is the longest allowed.
    assert order_expiry(NOW, expire_time=None, ttl=timedelta(days=7)) == NOW + timedelta(days=7)


@pytest.mark.parametrize(
    ("expire_time", "ttl", "field"),
    [
        (NOW, None, "expire_time"),
        (NOW - timedelta(seconds=1), None, "expire_time"),
        (NOW + timedelta(days=7, microseconds=1), None, "expire_time"),
        (None, timedelta(0), "ttl"),
        (None, timedelta(seconds=-5), "ttl"),
        (None, timedelta(days=8), "ttl"),
    ],
)
def test_expiry_must_be_in_the_future_and_at_most_7_days_ahead(
    expire_time: datetime | None, ttl: timedelta | None, field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        order_expiry(NOW, expire_time=expire_time, ttl=ttl)
    assert violation_fields(caught.value) == {field}


def test_an_open_order_expires_at_its_expiry_when_read() -> None:
    o = order()
    assert o.as_of(o.expires_at - timedelta(microseconds=1)).status is OrderStatus.OPEN
    assert o.as_of(o.expires_at).status is OrderStatus.EXPIRED
    # A paid order never expires.
    p = paid()
    assert p.as_of(p.expires_at + timedelta(days=30)).status is OrderStatus.PAID


def test_expire_order_stores_what_reads_already_say() -> None:
    o = order()
    assert expire_order(o, o.expires_at).status is OrderStatus.EXPIRED
    with pytest.raises(FailedPrecondition):
        expire_order(o, o.expires_at - timedelta(seconds=1))
    with pytest.raises(FailedPrecondition):
        expire_order(paid(), NOW + timedelta(days=1))


# --- creating -------------------------------------------------------------------------------


def test_new_orders_are_open_and_refuse_bad_input() -> None:
    o = order()
    assert (o.status, o.refunded_minor, o.paid_at) == (OrderStatus.OPEN, 0, None)
    with pytest.raises(InvalidArgument) as caught:
        order(0)
    assert violation_fields(caught.value) == {"amount.amount_minor"}
    with pytest.raises(InvalidArgument) as caught:
        order(description="x" * 501)
    assert violation_fields(caught.value) == {"description"}
    with pytest.raises(InvalidArgument) as caught:
        order(merchant_reference="x" * 129)
    assert violation_fields(caught.value) == {"merchant_reference"}


def test_the_payer_does_not_see_the_merchants_reference() -> None:
    o = order()
    assert o.merchant_reference == "ref-1"
    assert o.payer_view().merchant_reference == ""
    assert replace(o.payer_view(), merchant_reference="ref-1") == o


# --- paying ---------------------------------------------------------------------------------


def test_payment_moves_the_price_from_payer_to_merchant_settlement() -> None:
    o = order(1_234)
    payer, settlement = account(posted=5_000), account(kind=AccountKind.SETTLEMENT)
    legs = plan_payment(o, payer, settlement, NOW)
    assert [(leg.account_id, leg.amount) for leg in legs] == [
        (payer.account_id, -1_234),
        (settlement.account_id, 1_234),
    ]
    after = mark_order_paid(
        o, now=NOW, payer_account_id=payer.account_id, transaction_id=(tx := uuid4())
    )
    assert (after.status, after.paid_at, after.payer_account_id, after.payment_transaction_id) == (
        OrderStatus.PAID,
        NOW,
        payer.account_id,
        tx,
    )


@pytest.mark.parametrize(
    "status", [OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED]
)
def test_an_order_is_paid_at_most_once(status: OrderStatus) -> None:
    o = replace(paid(), status=status)
    with pytest.raises(FailedPrecondition) as caught:
        ensure_payable(o, NOW)
    assert caught.value.reason == Reason.ORDER_ALREADY_PAID
    with pytest.raises(FailedPrecondition) as caught:
        mark_order_paid(o, now=NOW, payer_account_id=uuid4(), transaction_id=uuid4())
    assert caught.value.reason == Reason.ORDER_ALREADY_PAID


def test_an_expired_order_cannot_be_paid_whether_stored_or_computed() -> None:
    o = order()
    with pytest.raises(FailedPrecondition) as caught:
        ensure_payable(o, o.expires_at)
    assert caught.value.reason == Reason.ORDER_EXPIRED
    with pytest.raises(FailedPrecondition) as caught:
        ensure_payable(replace(o, status=OrderStatus.EXPIRED), NOW)
    assert caught.value.reason == Reason.ORDER_EXPIRED
    ensure_payable(o, o.expires_at - timedelta(microseconds=1))


@pytest.mark.parametrize(
    ("payer", "reason"),
    [
        (account("EUR", posted=5_000), Reason.CURRENCY_MISMATCH),
        (account(posted=999), Reason.INSUFFICIENT_FUNDS),
        (account(posted=5_000, frozen=True), Reason.ACCOUNT_FROZEN),
        # Held funds are not available.
        (account(posted=1_500, pending_out=501), Reason.INSUFFICIENT_FUNDS),
    ],
)
def test_payment_refusals_from_the_payers_account(payer: Account, reason: Reason) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        plan_payment(order(1_000), payer, account(kind=AccountKind.SETTLEMENT), NOW)
    assert caught.value.reason == reason


def test_order_state_is_judged_before_the_payers_account() -> None:
    broke_and_wrong_currency = account("EUR")
    with pytest.raises(FailedPrecondition) as caught:
        plan_payment(paid(), broke_and_wrong_currency, account(kind=AccountKind.SETTLEMENT), NOW)
    assert caught.value.reason == Reason.ORDER_ALREADY_PAID


# --- refunding ------------------------------------------------------------------------------


def test_partial_refunds_then_the_rest() -> None:
    o = paid(1_000)
    o = apply_refund(o, Money("USD", 300))
    assert (o.status, o.refunded_minor, o.refundable_minor) == (
        OrderStatus.PARTIALLY_REFUNDED,
        300,
        700,
    )
    o = apply_refund(o, Money("USD", 700))
    assert (o.status, o.refunded_minor, o.refundable_minor) == (OrderStatus.REFUNDED, 1_000, 0)
    with pytest.raises(FailedPrecondition) as caught:
        apply_refund(o, Money("USD", 1))
    assert caught.value.reason == Reason.REFUND_EXCEEDS_PAYMENT


@pytest.mark.parametrize(
    ("subject", "amount", "reason"),
    [
        (order(), Money("USD", 1), "FAILED_PRECONDITION"),
        (order(status=OrderStatus.EXPIRED), Money("USD", 1), "FAILED_PRECONDITION"),
        (paid(), Money("EUR", 1), Reason.CURRENCY_MISMATCH),
        (paid(1_000), Money("USD", 1_001), Reason.REFUND_EXCEEDS_PAYMENT),
        (
            replace(paid(1_000), status=OrderStatus.PARTIALLY_REFUNDED, refunded_minor=600),
            Money("USD", 401),
            Reason.REFUND_EXCEEDS_PAYMENT,
        ),
    ],
)
def test_refund_refusals(subject: Order, amount: Money, reason: str) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        apply_refund(subject, amount)
    assert caught.value.reason == reason


@given(
    price=st.integers(min_value=1, max_value=10**15),
    requests=st.lists(st.integers(min_value=1, max_value=10**15), max_size=20),
)
def test_refunds_never_add_up_to_more_than_the_payment(price: int, requests: list[int]) -> None:
    o = paid(price)
    accepted = 0
    for amount in requests:
        if accepted + amount > price:
            with pytest.raises(FailedPrecondition) as caught:
                apply_refund(o, Money("USD", amount))
            assert caught.value.reason == Reason.REFUND_EXCEEDS_PAYMENT
            continue
        o = apply_refund(o, Money("USD", amount))
        accepted += amount
    assert o.refunded_minor == accepted <= price
    expected = (
        OrderStatus.PAID
        if accepted == 0
        else OrderStatus.REFUNDED
        if accepted == price
        else OrderStatus.PARTIALLY_REFUNDED
    )
    assert o.status is expected
