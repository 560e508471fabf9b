"""Account statements: balances at the edges of a period and the postings in between."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from wallet_server.domain import Posting, Transaction
from wallet_server.storage._tables import postings, transactions
from wallet_server.storage.repositories._ledger import _transaction


@dataclass(frozen=True, slots=True)
class StatementTotals:
    """Signed sums in the account's minor units over the postings before ``end``."""

    opening: int  # everything posted before the period
    credits: int  # positive entries of the period
    debits: int  # negative entries of the period, as a positive number


@dataclass(frozen=True, slots=True)
class StatementLine:
    """The effect of one transaction on the account, with the balance right after it."""

    transaction_id: UUID
    posting_id: int  # the first of the transaction's postings to the account: the tie-break
    posted_at: datetime
    amount: int
    balance_after: int


# One statement, so the totals and the page come from the same snapshot. An entry is a
# transaction's net effect on the account; entries are ordered by (post time, first posting).
_STATEMENT = text(
    """
    WITH entries AS (
        SELECT p.transaction_id, min(p.posting_id) AS posting_id,
            min(p.created_at) AS posted_at, sum(p.amount) AS amount
        FROM postings AS p
        WHERE p.account_id = :account_id AND p.created_at < :end_time
        GROUP BY p.transaction_id
    ),
    totals AS (
        SELECT
            coalesce(sum(amount) FILTER (WHERE posted_at < :start_time), 0) AS opening,
            coalesce(sum(amount) FILTER (WHERE posted_at >= :start_time AND amount > 0), 0)
                AS credits,
            coalesce(-sum(amount) FILTER (WHERE posted_at >= :start_time AND amount < 0), 0)
                AS debits
        FROM entries
    ),
    period AS (
        SELECT entries.*, sum(amount) OVER (ORDER BY posted_at, posting_id) AS running
        FROM entries
        WHERE posted_at >= :start_time
    ),
    page AS (
        SELECT * FROM period
        WHERE CAST(:after_time AS timestamptz) IS NULL
            OR (posted_at, posting_id)
                > (CAST(:after_time AS timestamptz), CAST(:after_posting AS bigint))
        ORDER BY posted_at, posting_id
        LIMIT :limit
    )
    SELECT totals.opening, totals.credits, totals.debits, page.transaction_id,
        page.posting_id, page.posted_at, page.amount, page.running
    FROM totals LEFT JOIN page ON true
    ORDER BY page.posted_at, page.posting_id
    """
)


class StatementRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def statement(
        self,
        account_id: UUID,
        *,
        start: datetime,
        end: datetime,
        after: tuple[datetime, int] | None,
        limit: int,
    ) -> tuple[StatementTotals, list[StatementLine]]:
        """Totals of the period [start, end) and up to ``limit`` of its entries after
        ``after`` (the position of the last entry of the previous page), oldest first."""
        rows = list(
            await self._conn.execute(
                _STATEMENT,
                {
                    "account_id": account_id,
                    "start_time": start,
                    "end_time": end,
                    "after_time": None if after is None else after[0],
                    "after_posting": None if after is None else after[1],
                    "limit": limit,
                },
            )
        )
        first = rows[0]  # the LEFT JOIN always yields the totals row
        totals = StatementTotals(int(first.opening), int(first.credits), int(first.debits))
        opening = totals.opening
        lines = [
            StatementLine(
                transaction_id=row.transaction_id,
                posting_id=int(row.posting_id),
                posted_at=row.posted_at,
                amount=int(row.amount),
                balance_after=opening + int(row.running),
            )
            for row in rows
            if row.transaction_id is not None
        ]
        return totals, lines

    async def transactions(self, transaction_ids: Sequence[UUID]) -> dict[UUID, Transaction]:
        """The transactions with their legs, by id."""
        if not transaction_ids:
            return {}
        ids = list(transaction_ids)
        legs: dict[UUID, list[Posting]] = {}
        for row in await self._conn.execute(
            select(
                postings.c.transaction_id,
                postings.c.account_id,
                postings.c.amount,
                postings.c.currency,
            )
            .where(postings.c.transaction_id.in_(ids))
            .order_by(postings.c.posting_id)
        ):
            legs.setdefault(row.transaction_id, []).append(
                Posting(row.account_id, row.amount, row.currency)
            )
        found = await self._conn.execute(
            select(transactions).where(transactions.c.transaction_id.in_(ids))
        )
        return {
            row.transaction_id: _transaction(row, legs.get(row.transaction_id, [])) for row in found
        }


__all__ = ["StatementLine", "StatementRepository", "StatementTotals"]
