"""Promotions persistence. A promotion row is locked by each payment that may spend from it."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from wallet_server.domain import Money, Promotion
from wallet_server.storage._driver import Driver, fetch_rows, run_sql
from wallet_server.storage._tables import partners, promotions


def _promotion(row: Any, names: dict[UUID, str]) -> Promotion:
    ids = tuple(sorted(row.merchant_partner_ids))
    return Promotion(
        promotion_id=row.promotion_id,
        display_name=row.name,
        cashback_basis_points=row.basis_points,
        max_cashback_per_payment=Money(row.currency, row.per_payment_cap),
        budget=Money(row.currency, row.budget),
        spent=Money(row.currency, row.spent),
        min_payment_amount=None
        if row.min_payment is None
        else Money(row.currency, row.min_payment),
        merchant_partner_ids=ids,
        merchant_names=tuple(sorted(names[i] for i in ids if i in names)),
        start_time=row.starts_at,
        end_time=row.ends_at,
        ended_at=row.ended_at,
        funding_account_id=row.funding_account_id,
        created_at=row.created_at,
    )


# Promotions that may pay cashback on a payment, locked in id order.
_CANDIDATES = """
    SELECT * FROM promotions
    WHERE currency = :currency AND starts_at <= :at AND ends_at > :at AND ended_at IS NULL
        AND spent < budget
        AND (min_payment IS NULL OR min_payment <= :payment_minor)
        AND (cardinality(merchant_partner_ids) = 0
            OR CAST(:merchant AS uuid) = ANY(merchant_partner_ids))
    ORDER BY promotion_id
    FOR UPDATE
"""

_SAVE = """
    UPDATE promotions SET spent = :spent, ended_at = :ended_at
    WHERE promotion_id = :promotion_id
"""

_PARTNER_NAMES = (
    "SELECT partner_id, name FROM partners WHERE partner_id = ANY(CAST(:ids AS uuid[]))"
)


class PromotionRepository:
    """What every payment does (find and lock candidate promotions, spend from one) runs on
    the driver connection; ``driver`` is the psycopg connection beneath ``conn``."""

    def __init__(self, conn: AsyncConnection, driver: Driver) -> None:
        self._conn = conn
        self._driver = driver

    async def partner_ids_by_name(self, names: Collection[str]) -> dict[str, UUID]:
        """Registered partners (revoked or not) among ``names``."""
        if not names:
            return {}
        rows = await self._conn.execute(
            select(partners.c.name, partners.c.partner_id).where(partners.c.name.in_(names))
        )
        return {row.name: row.partner_id for row in rows}

    async def add(self, promotion: Promotion) -> None:
        await self._conn.execute(
            promotions.insert().values(
                promotion_id=promotion.promotion_id,
                name=promotion.display_name,
                currency=promotion.currency,
                basis_points=promotion.cashback_basis_points,
                per_payment_cap=promotion.max_cashback_per_payment.amount_minor,
                budget=promotion.budget.amount_minor,
                spent=promotion.spent.amount_minor,
                starts_at=promotion.start_time,
                ends_at=promotion.end_time,
                ended_at=promotion.ended_at,
                merchant_partner_ids=list(promotion.merchant_partner_ids),
                min_payment=None
                if promotion.min_payment_amount is None
                else promotion.min_payment_amount.amount_minor,
                funding_account_id=promotion.funding_account_id,
                created_at=promotion.created_at,
            )
        )

    async def get(self, promotion_id: UUID) -> Promotion | None:
        found = await self._load(
            select(promotions).where(promotions.c.promotion_id == promotion_id)
        )
        return found[0] if found else None

    async def lock(self, promotion_id: UUID) -> Promotion | None:
        found = await self._load(
            select(promotions).where(promotions.c.promotion_id == promotion_id).with_for_update()
        )
        return found[0] if found else None

    async def lock_candidates(
        self, *, currency: str, merchant_partner_id: UUID, payment_minor: int, at: datetime
    ) -> list[Promotion]:
        """Promotions that may pay cashback on this payment, locked in id order (so concurrent
        payers cannot deadlock). The domain makes the final choice on the locked rows."""
        rows = await fetch_rows(
            self._driver,
            _CANDIDATES,
            {
                "currency": currency,
                "at": at,
                "payment_minor": payment_minor,
                "merchant": merchant_partner_id,
            },
        )
        return await self._with_names(rows)

    async def save(self, promotion: Promotion) -> None:
        """Store what changes over a promotion's life: the budget spent and its end."""
        await run_sql(
            self._driver,
            _SAVE,
            {
                "promotion_id": promotion.promotion_id,
                "spent": promotion.spent.amount_minor,
                "ended_at": promotion.ended_at,
            },
        )

    async def page(self, *, before: tuple[datetime, UUID] | None, limit: int) -> list[Promotion]:
        """Newest first; ``before`` is the (created_at, id) of the last promotion seen."""
        stmt = select(promotions)
        if before is not None:
            created_at, promotion_id = before
            stmt = stmt.where(
                or_(
                    promotions.c.created_at < created_at,
                    and_(
                        promotions.c.created_at == created_at,
                        promotions.c.promotion_id < promotion_id,
                    ),
                )
            )
        stmt = stmt.order_by(
            promotions.c.created_at.desc(), promotions.c.promotion_id.desc()
        ).limit(limit)
        return await self._load(stmt)

    async def _load(self, stmt: Any) -> list[Promotion]:
        return await self._with_names(list(await self._conn.execute(stmt)))

    async def _with_names(self, rows: Sequence[Any]) -> list[Promotion]:
        """The promotions of ``rows``, with their merchants' names."""
        ids = sorted({i for row in rows for i in row.merchant_partner_ids})
        names: dict[UUID, str] = {}
        if ids:
            found = await fetch_rows(self._driver, _PARTNER_NAMES, {"ids": ids})
            names = {row.partner_id: row.name for row in found}
        return [_promotion(row, names) for row in rows]


__all__ = ["PromotionRepository"]
