"""Exchange persistence: the operators' rates and the users' quotes."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import and_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from wallet_server.domain import ExchangeRate, Money, Quote
from wallet_server.storage._tables import exchange_rates, quotes


def _rate(row: Any) -> ExchangeRate:
    return ExchangeRate(
        from_currency=row.from_currency,
        to_currency=row.to_currency,
        rate=row.rate,
        updated_at=row.updated_at,
    )


def _quote(row: Any) -> Quote:
    return Quote(
        quote_id=row.quote_id,
        user_id=row.user_id,
        from_account_id=row.from_account_id,
        to_account_id=row.to_account_id,
        from_amount=Money(row.from_currency, row.from_amount),
        to_amount=Money(row.to_currency, row.to_amount),
        rate=row.rate,
        created_at=row.created_at,
        expires_at=row.expires_at,
        transaction_id=row.transaction_id,
    )


class ExchangeRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    # --- rates ----------------------------------------------------------------------------

    async def set_rate(self, rate: ExchangeRate, *, updated_by: str) -> ExchangeRate:
        """Insert or replace the rate of the pair; returns it as stored."""
        values = {
            "from_currency": rate.from_currency,
            "to_currency": rate.to_currency,
            "rate": rate.rate,
            "updated_at": rate.updated_at,
            "updated_by": updated_by,
        }
        insert = pg_insert(exchange_rates).values(**values)
        stmt = insert.on_conflict_do_update(
            index_elements=[exchange_rates.c.from_currency, exchange_rates.c.to_currency],
            set_={k: insert.excluded[k] for k in ("rate", "updated_at", "updated_by")},
        ).returning(*exchange_rates.c)
        return _rate((await self._conn.execute(stmt)).one())

    async def get_rate(self, from_currency: str, to_currency: str) -> ExchangeRate | None:
        row = (
            await self._conn.execute(
                select(exchange_rates).where(
                    exchange_rates.c.from_currency == from_currency,
                    exchange_rates.c.to_currency == to_currency,
                )
            )
        ).first()
        return None if row is None else _rate(row)

    async def list_rates(self, *, after: tuple[str, str] | None, limit: int) -> list[ExchangeRate]:
        """By from then to currency; ``after`` is the last pair of the previous page."""
        stmt = select(exchange_rates)
        if after is not None:
            stmt = stmt.where(
                tuple_(exchange_rates.c.from_currency, exchange_rates.c.to_currency)
                > tuple_(*after)
            )
        stmt = stmt.order_by(exchange_rates.c.from_currency, exchange_rates.c.to_currency).limit(
            limit
        )
        return [_rate(row) for row in await self._conn.execute(stmt)]

    # --- quotes ---------------------------------------------------------------------------

    async def add_quote(self, quote: Quote) -> None:
        await self._conn.execute(
            quotes.insert().values(
                quote_id=quote.quote_id,
                user_id=quote.user_id,
                from_account_id=quote.from_account_id,
                to_account_id=quote.to_account_id,
                from_currency=quote.from_amount.currency,
                from_amount=quote.from_amount.amount_minor,
                to_currency=quote.to_amount.currency,
                to_amount=quote.to_amount.amount_minor,
                rate=quote.rate,
                created_at=quote.created_at,
                expires_at=quote.expires_at,
            )
        )

    async def lock_quote(self, quote_id: UUID) -> Quote | None:
        """The quote, its row locked until the end of the unit of work."""
        row = (
            await self._conn.execute(
                select(quotes).where(quotes.c.quote_id == quote_id).with_for_update()
            )
        ).first()
        return None if row is None else _quote(row)

    async def mark_quote_executed(self, quote_id: UUID, transaction_id: UUID) -> None:
        """Bind the quote to its EXCHANGE; never twice (the caller holds the row lock)."""
        result = await self._conn.execute(
            update(quotes)
            .where(and_(quotes.c.quote_id == quote_id, quotes.c.transaction_id.is_(None)))
            .values(transaction_id=transaction_id)
        )
        if result.rowcount != 1:
            raise RuntimeError(f"quote {quote_id} was executed twice")


__all__ = ["ExchangeRepository"]
