"""Promotions persistence. A promotion row is locked by each payment that may spend from it."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import and_, any_, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.ext.asyncio import AsyncConnection

from wallet_server.domain import Money, Promotion
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


class PromotionRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

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
        stmt = (
            select(promotions)
            .where(
                promotions.c.currency == currency,
                promotions.c.starts_at <= at,
                promotions.c.ends_at > at,
                promotions.c.ended_at.is_(None),
                promotions.c.spent < promotions.c.budget,
                or_(promotions.c.min_payment.is_(None), promotions.c.min_payment <= payment_minor),
                or_(
                    func.cardinality(promotions.c.merchant_partner_ids) == 0,
                    literal(merchant_partner_id, PG_UUID(as_uuid=True))
                    == any_(promotions.c.merchant_partner_ids),
                ),
            )
            .order_by(promotions.c.promotion_id)
            .with_for_update()
        )
        return await self._load(stmt)

    async def save(self, promotion: Promotion) -> None:
        """Store what changes over a promotion's life: the budget spent and its end."""
        await self._conn.execute(
            update(promotions)
            .where(promotions.c.promotion_id == promotion.promotion_id)
            .values(spent=promotion.spent.amount_minor, ended_at=promotion.ended_at)
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
        rows: Sequence[Any] = list(await self._conn.execute(stmt))
        ids = {i for row in rows for i in row.merchant_partner_ids}
        names: dict[UUID, str] = {}
        if ids:
            found = await self._conn.execute(
                select(partners.c.partner_id, partners.c.name).where(partners.c.partner_id.in_(ids))
            )
            names = {row.partner_id: row.name for row in found}
        return [_promotion(row, names) for row in rows]


__all__ = ["PromotionRepository"]
