"""Use cases: merchant orders (支付), their payment with cashback, and refunds.

A partner acting as merchant creates an order; a user pays it once from an account of the
order's currency: a POSTED PAYMENT to the merchant's settlement account. In the same database
transaction the best qualifying promotion credits a CASHBACK from its promotions account. The
merchant refunds all or part of the payment (POSTED REFUND back to the payer's account), never
more than was paid in total; cashback already paid is kept by the payer.

Locks, always in this order: the order row (so one payment per order, and refunds of one order,
serialise), then the promotion rows that may pay cashback (in id order), then every account
that changes, in one ``lock_accounts`` call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from wallet_server.domain import (
    AccountKind,
    EventType,
    FailedPrecondition,
    LedgerEvent,
    Money,
    NotFound,
    Order,
    PartnerPrincipal,
    Posting,
    Transaction,
    TransactionKind,
    TransactionStatus,
    UserPrincipal,
    apply_refund,
    best_cashback,
    expire_order,
    is_payable,
    mark_order_paid,
    new_order,
    order_expiry,
    plan_payment,
    plan_transfer,
    spend_promotion_budget,
    transaction_event,
)
from wallet_server.services._accounts import account_not_found
from wallet_server.services._call import note_resources
from wallet_server.services._events import publish
from wallet_server.services._idempotency import run_once
from wallet_server.services._retry import retry_on_conflict
from wallet_server.services._unit_of_work import UnitOfWork

# Payment memos show what was bought; a transaction memo holds at most this much of it.
_MAX_PAYMENT_MEMO = 200

# --- commands and results -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateOrder:
    caller: PartnerPrincipal
    request_id: UUID
    amount: Money
    description: str
    merchant_reference: str
    # At most one: an absolute expiry, or a time to live; neither means 15 minutes.
    expire_time: datetime | None = None
    ttl_microseconds: int | None = None


@dataclass(frozen=True, slots=True)
class GetOrder:
    caller: PartnerPrincipal
    order_id: UUID


@dataclass(frozen=True, slots=True)
class GetMerchantOrder:
    caller: UserPrincipal
    order_id: UUID


@dataclass(frozen=True, slots=True)
class PayOrder:
    caller: UserPrincipal
    request_id: UUID
    order_id: UUID
    from_account_id: UUID


@dataclass(frozen=True, slots=True)
class RefundPayment:
    caller: PartnerPrincipal
    request_id: UUID
    order_id: UUID
    amount: Money
    reason: str


@dataclass(frozen=True, slots=True)
class ExpireOrders:
    """Store EXPIRED on up to ``limit`` overdue open orders (a periodic job's batch)."""

    limit: int = 500


@dataclass(frozen=True, slots=True)
class OrderPayment:
    transaction: Transaction  # the POSTED PAYMENT
    order: Order  # the order after payment, as the payer sees it
    cashback_transaction: Transaction | None  # the CASHBACK, when a promotion paid one


@dataclass(frozen=True, slots=True)
class OrderRefund:
    transaction: Transaction  # the POSTED REFUND
    order: Order  # the order after the refund


def order_not_found(order_id: UUID) -> NotFound:
    # The same answer whether the order does not exist or belongs to another merchant.
    return NotFound(f"order {order_id} not found")


# --- creating and reading -------------------------------------------------------------------


async def _settlement_account(uow: UnitOfWork, order: Order, found: UUID | None) -> UUID:
    """The merchant's settlement account in the order's currency: ``found`` with the order,
    or made now (by the merchant's first order in a currency, or the payment of an order
    stored before orders made it)."""
    if found is not None:
        return found
    return await uow.ledger.ensure_system_account(
        account_id=uow.new_id(),
        kind=AccountKind.SETTLEMENT,
        currency=order.amount.currency,
        partner_id=order.partner_id,
    )


@retry_on_conflict
async def create_order(cmd: CreateOrder, uow: UnitOfWork) -> Order:
    """A new OPEN order of the calling merchant."""
    async with uow:

        async def execute() -> Order:
            now = uow.now()
            ttl = (
                None
                if cmd.ttl_microseconds is None
                else timedelta(microseconds=cmd.ttl_microseconds)
            )
            order = new_order(
                order_id=uow.new_id(),
                partner_id=cmd.caller.partner_id,
                merchant_name=cmd.caller.name,
                amount=cmd.amount,
                description=cmd.description,
                merchant_reference=cmd.merchant_reference,
                now=now,
                expires_at=order_expiry(now, expire_time=cmd.expire_time, ttl=ttl),
            )
            # The account the payment will credit, ready before anyone pays (the order's
            # insert looks for it: one round trip when it exists, as it mostly does).
            await _settlement_account(uow, order, await uow.orders.add(order))
            return order

        order = await run_once(
            uow,
            principal=cmd.caller.key,
            request_id=cmd.request_id,
            method="CreateOrder",
            command=cmd,
            result_type=Order,
            execute=execute,
        )
        note_resources(order.order_id)
        await uow.commit()
        return order


@retry_on_conflict
async def get_order(cmd: GetOrder, uow: UnitOfWork) -> Order:
    """One of the calling merchant's orders, as it stands now."""
    async with uow:
        note_resources(cmd.order_id)
        order = await uow.orders.get(cmd.order_id)
        if order is None or order.partner_id != cmd.caller.partner_id:
            raise order_not_found(cmd.order_id)
        return order.as_of(uow.now())


@retry_on_conflict
async def get_merchant_order(cmd: GetMerchantOrder, uow: UnitOfWork) -> Order:
    """Any order by id, for the user about to pay it: without the merchant's reference."""
    async with uow:
        note_resources(cmd.order_id)
        order = await uow.orders.get(cmd.order_id)
        if order is None:
            raise order_not_found(cmd.order_id)
        payer = (
            None
            if order.payer_account_id is None
            else await uow.ledger.get_account(order.payer_account_id)
        )
        current = order.as_of(uow.now())
        if payer is not None and payer.owner_user_id == cmd.caller.user_id:
            return current.payer_view()
        return current.public_view()


# --- paying ---------------------------------------------------------------------------------


async def _pay(uow: UnitOfWork, cmd: PayOrder) -> OrderPayment:
    found = await uow.orders.lock(cmd.order_id)
    if found is None:
        raise order_not_found(cmd.order_id)
    order = found.order
    settlement_id = await _settlement_account(uow, order, found.settlement_account_id)
    now = uow.now()
    # The payer's account is first read with its lock: one round trip instead of two. A
    # refused payment (someone else's account) holds these locks only until its savepoint is
    # undone; a paid or expired order, refused below after the payer's account as before,
    # takes no promotion's lock (the promotions that every payment of a currency locks).
    candidates = (
        await uow.promotions.lock_candidates(
            currency=order.amount.currency,
            merchant_partner_id=order.partner_id,
            payment_minor=order.amount.amount_minor,
            at=now,
        )
        if is_payable(order, now)
        else []
    )
    locked = await uow.ledger.lock_accounts(
        {cmd.from_account_id, settlement_id, *(p.funding_account_id for p in candidates)}
    )
    payer = locked.get(cmd.from_account_id)
    if payer is None or payer.owner_user_id != cmd.caller.user_id:
        raise account_not_found(cmd.from_account_id)
    legs = plan_payment(order, payer, locked[settlement_id], now)  # paid, expired, currency

    cashback_legs: tuple[Posting, ...] = ()
    choice = best_cashback(candidates, order.amount, order.partner_id, now)
    if choice is not None:
        promotion, cashback = choice
        try:
            cashback_legs = plan_transfer(locked[promotion.funding_account_id], payer, cashback)
        except FailedPrecondition:
            # E.g. an operator froze the promotions account: the payment goes through and
            # earns no cashback, rather than failing for a reason the payer cannot fix.
            choice = None

    payment = Transaction(
        transaction_id=uow.new_id(),
        kind=TransactionKind.PAYMENT,
        status=TransactionStatus.POSTED,
        amount=order.amount,
        from_account_id=payer.account_id,
        to_account_id=settlement_id,
        memo=order.description[:_MAX_PAYMENT_MEMO],
        external_reference="",
        created_at=now,
        posted_at=now,
        postings=legs,
        partner_id=order.partner_id,
        order_id=order.order_id,
    )
    changed = await uow.ledger.record(payment, initiator=cmd.caller.key)
    paid = mark_order_paid(
        order, now=now, payer_account_id=payer.account_id, transaction_id=payment.transaction_id
    )
    await uow.orders.save(paid)
    # Users' streams carry this event too: they see the order as the payer does.
    events = [
        transaction_event(EventType.TRANSACTION_CREATED, payment, changed, order=paid.payer_view())
    ]

    cashback_tx: Transaction | None = None
    if choice is not None:
        promotion, cashback = choice
        cashback_tx = Transaction(
            transaction_id=uow.new_id(),
            kind=TransactionKind.CASHBACK,
            status=TransactionStatus.POSTED,
            amount=cashback,
            from_account_id=promotion.funding_account_id,
            to_account_id=payer.account_id,
            memo=promotion.display_name,
            external_reference="",
            created_at=now,
            posted_at=now,
            postings=cashback_legs,
            order_id=order.order_id,
            promotion_id=promotion.promotion_id,
        )
        changed = await uow.ledger.record(cashback_tx, initiator=cmd.caller.key)
        await uow.promotions.save(spend_promotion_budget(promotion, cashback))
        events.append(transaction_event(EventType.TRANSACTION_CREATED, cashback_tx, changed))

    events.append(
        LedgerEvent(
            type=EventType.ORDER_UPDATED,
            created_at=now,
            transaction=payment,
            order=paid,
            partner_id=order.partner_id,
        )
    )
    publish(uow, *events)
    return OrderPayment(
        transaction=payment, order=paid.payer_view(), cashback_transaction=cashback_tx
    )


@retry_on_conflict
async def pay_order(cmd: PayOrder, uow: UnitOfWork) -> OrderPayment:
    """Pay a merchant order in full, once; credit the best promotion's cashback with it."""
    async with uow:
        note_resources(cmd.order_id, cmd.from_account_id)
        result = await run_once(
            uow,
            principal=cmd.caller.key,
            request_id=cmd.request_id,
            method="PayOrder",
            command=cmd,
            result_type=OrderPayment,
            execute=lambda: _pay(uow, cmd),
        )
        cashback = result.cashback_transaction
        note_resources(
            result.transaction.transaction_id,
            None if cashback is None else cashback.transaction_id,
        )
        await uow.commit()
        return result


# --- refunding ------------------------------------------------------------------------------


async def _refund(uow: UnitOfWork, cmd: RefundPayment) -> OrderRefund:
    found = await uow.orders.lock(cmd.order_id)
    if found is None or found.order.partner_id != cmd.caller.partner_id:
        raise order_not_found(cmd.order_id)
    order = found.order
    now = uow.now()
    refunded = apply_refund(order.as_of(now), cmd.amount)
    assert order.payer_account_id is not None  # a paid order has its payer
    settlement_id = await _settlement_account(uow, order, found.settlement_account_id)
    locked = await uow.ledger.lock_accounts({settlement_id, order.payer_account_id})
    payer = locked.get(order.payer_account_id)
    if payer is None:  # accounts are never deleted; a missing one is a broken database
        raise RuntimeError(f"payer account of order {order.order_id} is missing")
    legs = plan_transfer(locked[settlement_id], payer, cmd.amount)
    refund = Transaction(
        transaction_id=uow.new_id(),
        kind=TransactionKind.REFUND,
        status=TransactionStatus.POSTED,
        amount=cmd.amount,
        from_account_id=settlement_id,
        to_account_id=payer.account_id,
        memo=cmd.reason,
        external_reference="",
        created_at=now,
        posted_at=now,
        postings=legs,
        partner_id=order.partner_id,
        order_id=order.order_id,
    )
    changed = await uow.ledger.record(refund, initiator=cmd.caller.key)
    await uow.orders.save(refunded)
    publish(
        uow,
        transaction_event(
            EventType.TRANSACTION_CREATED, refund, changed, order=refunded.payer_view()
        ),
        LedgerEvent(
            type=EventType.ORDER_UPDATED,
            created_at=now,
            transaction=refund,
            order=refunded,
            partner_id=order.partner_id,
        ),
    )
    return OrderRefund(transaction=refund, order=refunded)


@retry_on_conflict
async def refund_payment(cmd: RefundPayment, uow: UnitOfWork) -> OrderRefund:
    """Refund all or part of one of the merchant's paid orders to the payer's account."""
    async with uow:
        note_resources(cmd.order_id)
        result = await run_once(
            uow,
            principal=cmd.caller.key,
            request_id=cmd.request_id,
            method="RefundPayment",
            command=cmd,
            result_type=OrderRefund,
            execute=lambda: _refund(uow, cmd),
        )
        note_resources(result.transaction.transaction_id)
        await uow.commit()
        return result


# --- expiry ---------------------------------------------------------------------------------


@retry_on_conflict
async def expire_orders(cmd: ExpireOrders, uow: UnitOfWork) -> int:
    """Store EXPIRED on overdue open orders and tell their merchants (ORDER_UPDATED).

    Reads already treat an overdue order as expired; this makes it visible on the merchant's
    event stream. Orders being paid right now are skipped, not waited for. Returns how many
    orders expired; a periodic job calls it until it returns less than ``limit``.
    """
    async with uow:
        now = uow.now()
        due = await uow.orders.lock_due_for_expiry(now, limit=cmd.limit)
        expired = [expire_order(order, now) for order in due]
        for order in expired:
            await uow.orders.save(order)
        publish(
            uow,
            *(
                LedgerEvent(
                    type=EventType.ORDER_UPDATED,
                    created_at=now,
                    order=order,
                    partner_id=order.partner_id,
                )
                for order in expired
            ),
        )
        await uow.commit()
        return len(expired)


__all__ = [
    "CreateOrder",
    "ExpireOrders",
    "GetMerchantOrder",
    "GetOrder",
    "OrderPayment",
    "OrderRefund",
    "PayOrder",
    "RefundPayment",
    "create_order",
    "expire_orders",
    "get_merchant_order",
    "get_order",
    "order_not_found",
    "pay_order",
    "refund_payment",
]
