"""Orders persistence. An order row is locked (FOR UPDATE) by whoever pays or refunds it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncConnection

from wallet_server.domain import Money, Order, OrderStatus
from wallet_server.storage._driver import Driver, fetch_rows, run_sql
from wallet_server.storage._tables import orders, partners


def _order(row: Any) -> Order:
    return Order(
        order_id=row.order_id,
        partner_id=row.partner_id,
        merchant_name=row.merchant_name,
        amount=Money(row.currency, row.amount),
        description=row.description,
        merchant_reference=row.merchant_reference,
        status=OrderStatus(row.status),
        created_at=row.created_at,
        expires_at=row.expires_at,
        paid_at=row.paid_at,
        payer_account_id=row.payer_account_id,
        payment_transaction_id=row.payment_transaction_id,
        refunded_minor=row.refunded_amount,
    )


def _with_merchant() -> Select[Any]:
    return select(orders, partners.c.name.label("merchant_name")).join(
        partners, partners.c.partner_id == orders.c.partner_id
    )


# Answers with the merchant's settlement account in the order's currency, if there is one.
_ADD = """
    INSERT INTO orders (order_id, partner_id, currency, amount, description, merchant_reference,
        status, created_at, expires_at)
    VALUES (:order_id, :partner_id, :currency, :amount, :description, :merchant_reference,
        :status, :created_at, :expires_at)
    RETURNING (
        SELECT s.account_id FROM accounts AS s
        WHERE s.kind <> 'user' AND s.kind = 'settlement' AND s.currency = orders.currency
            AND s.partner_id = orders.partner_id
    ) AS settlement_account_id
"""

# The merchant's settlement account comes along (read, not locked): paying and refunding
# move money through it. "kind <> 'user'" lets the plan use the index on system accounts.
_LOCK = """
    SELECT o.*, p.name AS merchant_name, s.account_id AS settlement_account_id
    FROM orders AS o
    JOIN partners AS p ON p.partner_id = o.partner_id
    LEFT JOIN accounts AS s ON s.kind <> 'user' AND s.kind = 'settlement'
        AND s.currency = o.currency AND s.partner_id = o.partner_id
    WHERE o.order_id = :order_id
    FOR UPDATE OF o
"""

_SAVE = """
    UPDATE orders
    SET status = :status, paid_at = :paid_at, payer_account_id = :payer_account_id,
        payment_transaction_id = :payment_transaction_id, refunded_amount = :refunded_amount
    WHERE order_id = :order_id
"""


@dataclass(frozen=True, slots=True)
class LockedOrder:
    order: Order
    # The merchant's settlement account in the order's currency; None if it does not exist.
    settlement_account_id: UUID | None


class OrderRepository:
    """Creating, locking and saving an order (every order and payment call) run on the
    driver connection; ``driver`` is the psycopg connection beneath ``conn``."""

    def __init__(self, conn: AsyncConnection, driver: Driver) -> None:
        self._conn = conn
        self._driver = driver

    async def add(self, order: Order) -> UUID | None:
        """Store a new order; its merchant's settlement account in its currency, or None if
        there is none yet."""
        (added,) = await fetch_rows(
            self._driver,
            _ADD,
            {
                "order_id": order.order_id,
                "partner_id": order.partner_id,
                "currency": order.amount.currency,
                "amount": order.amount.amount_minor,
                "description": order.description,
                "merchant_reference": order.merchant_reference,
                "status": order.status.value,
                "created_at": order.created_at,
                "expires_at": order.expires_at,
            },
        )
        found: UUID | None = added.settlement_account_id
        return found

    async def get(self, order_id: UUID) -> Order | None:
        row = (
            await self._conn.execute(_with_merchant().where(orders.c.order_id == order_id))
        ).first()
        return None if row is None else _order(row)

    async def lock(self, order_id: UUID) -> LockedOrder | None:
        """The order, its row locked until the end of the unit of work, with its merchant's
        settlement account."""
        found = await fetch_rows(self._driver, _LOCK, {"order_id": order_id})
        if not found:
            return None
        return LockedOrder(_order(found[0]), found[0].settlement_account_id)

    async def save(self, order: Order) -> None:
        """Store the order's lifecycle fields (status, payment, refunds) as the domain decided."""
        await run_sql(
            self._driver,
            _SAVE,
            {
                "order_id": order.order_id,
                "status": order.status.value,
                "paid_at": order.paid_at,
                "payer_account_id": order.payer_account_id,
                "payment_transaction_id": order.payment_transaction_id,
                "refunded_amount": order.refunded_minor,
            },
        )

    async def lock_due_for_expiry(self, now: datetime, *, limit: int) -> list[Order]:
        """Up to ``limit`` OPEN orders whose expiry has come, locked; rows another transaction
        holds (being paid right now) are skipped."""
        stmt = (
            _with_merchant()
            .where(orders.c.status == OrderStatus.OPEN.value, orders.c.expires_at <= now)
            .order_by(orders.c.expires_at, orders.c.order_id)
            .limit(limit)
            .with_for_update(of=orders, skip_locked=True)
        )
        return [_order(row) for row in await self._conn.execute(stmt)]


__all__ = ["LockedOrder", "OrderRepository"]
