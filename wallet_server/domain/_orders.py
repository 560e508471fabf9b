"""Merchant orders: created by a partner, paid once by a user, refunded up to what was paid.

An order is OPEN until it is paid or its expiry passes. Expiry needs no writer: an OPEN order
whose ``expires_at`` has come is EXPIRED to anyone who reads or pays it (``as_of``); a sweeper
may also store that status. Paid orders go PAID → PARTIALLY_REFUNDED → REFUNDED as refunds
add up, never beyond the amount paid.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from uuid import UUID

from wallet_server.domain._errors import FailedPrecondition, InvalidArgument, Reason
from wallet_server.domain._ledger import Account, Posting, plan_transfer
from wallet_server.domain._money import Money

DEFAULT_ORDER_TTL = timedelta(minutes=15)
MAX_ORDER_TTL = timedelta(days=7)
MAX_ORDER_DESCRIPTION_LENGTH = 500
MAX_MERCHANT_REFERENCE_LENGTH = 128


class OrderStatus(StrEnum):
    OPEN = "open"
    PAID = "paid"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    EXPIRED = "expired"

    @property
    def is_paid(self) -> bool:
        """Money was paid for the order (whatever has been refunded since)."""
        return self in _PAID_STATUSES


_PAID_STATUSES = frozenset({OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED})


@dataclass(frozen=True, slots=True)
class Order:
    order_id: UUID
    partner_id: UUID
    merchant_name: str
    amount: Money
    description: str
    merchant_reference: str
    status: OrderStatus
    created_at: datetime
    expires_at: datetime
    paid_at: datetime | None = None
    payer_account_id: UUID | None = None
    payment_transaction_id: UUID | None = None
    refunded_minor: int = 0

    @property
    def refunded(self) -> Money:
        return Money(self.amount.currency, self.refunded_minor)

    @property
    def refundable_minor(self) -> int:
        """What may still be refunded: the amount paid minus the refunds so far."""
        return self.amount.amount_minor - self.refunded_minor if self.status.is_paid else 0

    def as_of(self, now: datetime) -> Order:
        """The order as it stands at ``now``: an OPEN order past its expiry is EXPIRED."""
        if self.status is OrderStatus.OPEN and now >= self.expires_at:
            return replace(self, status=OrderStatus.EXPIRED)
        return self

    def payer_view(self) -> Order:
        """What the paying user may see: the merchant's own reference is private."""
        return replace(self, merchant_reference="")

    def public_view(self) -> Order:
        """What any other signed-in user may see: whether it can still be paid, nothing
        about who paid it or how much went back."""
        return replace(
            self.payer_view(),
            paid_at=None,
            payer_account_id=None,
            payment_transaction_id=None,
            refunded_minor=0,
        )


def order_expiry(now: datetime, *, expire_time: datetime | None, ttl: timedelta | None) -> datetime:
    """When a new order stops being payable: an absolute time, a time to live, or 15 minutes.

    It must lie after ``now`` and at most 7 days ahead (INVALID_ARGUMENT on the field given).
    """
    if expire_time is not None and ttl is not None:
        raise InvalidArgument.for_field("expire_time", "give expire_time or ttl, not both")
    if expire_time is not None:
        field, expires_at = "expire_time", expire_time
    elif ttl is not None:
        field, expires_at = "ttl", now + ttl
    else:
        return now + DEFAULT_ORDER_TTL
    if expires_at <= now:
        raise InvalidArgument.for_field(field, "the order would already be expired")
    if expires_at - now > MAX_ORDER_TTL:
        raise InvalidArgument.for_field(field, "at most 7 days ahead")
    return expires_at


def new_order(
    *,
    order_id: UUID,
    partner_id: UUID,
    merchant_name: str,
    amount: Money,
    description: str,
    merchant_reference: str,
    now: datetime,
    expires_at: datetime,
) -> Order:
    if not amount.is_positive():
        raise InvalidArgument.for_field("amount.amount_minor", "must be positive")
    if len(description) > MAX_ORDER_DESCRIPTION_LENGTH:
        raise InvalidArgument.for_field(
            "description", f"at most {MAX_ORDER_DESCRIPTION_LENGTH} characters"
        )
    if len(merchant_reference) > MAX_MERCHANT_REFERENCE_LENGTH:
        raise InvalidArgument.for_field(
            "merchant_reference", f"at most {MAX_MERCHANT_REFERENCE_LENGTH} characters"
        )
    return Order(
        order_id=order_id,
        partner_id=partner_id,
        merchant_name=merchant_name,
        amount=amount,
        description=description,
        merchant_reference=merchant_reference,
        status=OrderStatus.OPEN,
        created_at=now,
        expires_at=expires_at,
    )


def is_payable(order: Order, now: datetime) -> bool:
    """Whether :func:`ensure_payable` lets a payment of ``order`` through at ``now``."""
    current = order.as_of(now)
    return not current.status.is_paid and current.status is not OrderStatus.EXPIRED


def ensure_payable(order: Order, now: datetime) -> None:
    """An order is paid at most once, and only before its expiry."""
    current = order.as_of(now)
    if current.status.is_paid:
        raise FailedPrecondition(
            f"order {order.order_id} was already paid", reason=Reason.ORDER_ALREADY_PAID
        )
    if current.status is OrderStatus.EXPIRED:
        raise FailedPrecondition(
            f"order {order.order_id} expired at {order.expires_at.isoformat()}",
            reason=Reason.ORDER_EXPIRED,
        )


def plan_payment(
    order: Order, payer: Account, merchant_settlement: Account, now: datetime
) -> tuple[Posting, ...]:
    """Decide the payment of ``order`` from ``payer`` to the merchant's settlement account.

    Checks in a fixed order: paid, expired, then the payer's account (frozen, currency, funds).
    """
    ensure_payable(order, now)
    if payer.currency != order.amount.currency:
        # Named before the payer's funds: paying from the wrong account is the real problem.
        raise FailedPrecondition(
            f"the order is in {order.amount.currency}; the account holds {payer.currency}",
            reason=Reason.CURRENCY_MISMATCH,
        )
    return plan_transfer(payer, merchant_settlement, order.amount)


def mark_order_paid(
    order: Order, *, now: datetime, payer_account_id: UUID, transaction_id: UUID
) -> Order:
    ensure_payable(order, now)
    return replace(
        order,
        status=OrderStatus.PAID,
        paid_at=now,
        payer_account_id=payer_account_id,
        payment_transaction_id=transaction_id,
    )


def apply_refund(order: Order, amount: Money) -> Order:
    """The order after refunding ``amount`` of its payment, or the refusal.

    Checks in a fixed order: paid at all, currency, then the refunded total.
    """
    if not order.status.is_paid:
        raise FailedPrecondition(f"order {order.order_id} is not paid")
    if amount.currency != order.amount.currency:
        raise FailedPrecondition(
            f"the order is in {order.amount.currency}, not {amount.currency}",
            reason=Reason.CURRENCY_MISMATCH,
        )
    if not amount.is_positive():
        raise InvalidArgument.for_field("amount.amount_minor", "must be positive")
    if amount.amount_minor > order.refundable_minor:
        raise FailedPrecondition(
            f"refunding {amount.format()} would exceed the payment: "
            f"{order.refunded.format()} of {order.amount.format()} already refunded",
            reason=Reason.REFUND_EXCEEDS_PAYMENT,
        )
    refunded = order.refunded_minor + amount.amount_minor
    status = (
        OrderStatus.REFUNDED
        if refunded == order.amount.amount_minor
        else OrderStatus.PARTIALLY_REFUNDED
    )
    return replace(order, refunded_minor=refunded, status=status)


def expire_order(order: Order, now: datetime) -> Order:
    """Store what ``as_of`` already says: an OPEN order past its expiry is EXPIRED."""
    current = order.as_of(now)
    if current.status is not OrderStatus.EXPIRED:
        raise FailedPrecondition(f"order {order.order_id} is not due to expire")
    return current
