"""Verification persistence: every ledger invariant as a query over the stored rows."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from wallet_server.domain import INT64_MAX, INT64_MIN, LedgerInvariant, LedgerViolation, Money

# Postings of a transaction that do not sum to zero in some currency.
_UNBALANCED = text(
    """
    SELECT transaction_id, currency, sum(amount) AS total
    FROM postings
    GROUP BY transaction_id, currency
    HAVING sum(amount) <> 0
    ORDER BY transaction_id, currency
    """
)

# Stored `posted` (with a system account's changes not folded yet) differs from the sum of
# the account's postings.
_POSTED_DRIFT = text(
    """
    SELECT a.account_id, a.currency, a.posted + coalesce(d.total, 0) AS posted,
        coalesce(p.total, 0) AS total
    FROM accounts AS a
    LEFT JOIN (
        SELECT account_id, sum(amount) AS total FROM postings GROUP BY account_id
    ) AS p ON p.account_id = a.account_id
    LEFT JOIN (
        SELECT account_id, sum(amount) AS total FROM balance_deltas GROUP BY account_id
    ) AS d ON d.account_id = a.account_id
    WHERE a.posted + coalesce(d.total, 0) <> coalesce(p.total, 0)
    ORDER BY a.account_id
    """
)

# A balance outside what `Money` carries: only a system account's can be, its row plus the
# changes not folded yet (the fold leaves those of such an account unfolded).
_OUT_OF_RANGE = text(
    """
    SELECT a.account_id, a.currency, a.posted + d.total AS balance
    FROM accounts AS a
    JOIN (
        SELECT account_id, sum(amount) AS total FROM balance_deltas GROUP BY account_id
    ) AS d ON d.account_id = a.account_id
    WHERE a.posted + d.total NOT BETWEEN -9223372036854775808 AND 9223372036854775807
    ORDER BY a.account_id
    """
)

# Stored `pending_out` differs from the amounts held by the account's open outgoing
# transactions (PENDING and HELD_FOR_REVIEW).
_PENDING_DRIFT = text(
    """
    SELECT a.account_id, a.currency, a.pending_out, coalesce(h.total, 0) AS total
    FROM accounts AS a
    LEFT JOIN (
        SELECT from_account_id AS account_id, sum(amount) AS total
        FROM transactions
        WHERE status IN ('pending', 'held_for_review')
        GROUP BY from_account_id
    ) AS h ON h.account_id = a.account_id
    WHERE a.pending_out <> coalesce(h.total, 0)
    ORDER BY a.account_id
    """
)

# A user account below zero (posted or available), or a negative hold on any account.
_NEGATIVE = text(
    """
    SELECT account_id, kind, currency, posted, pending_out
    FROM accounts
    WHERE (kind = 'user' AND (posted < 0 OR posted - pending_out < 0)) OR pending_out < 0
    ORDER BY account_id
    """
)

# Exactly the POSTED transactions have postings: a hold or a cancelled one has none.
_POSTINGS_VS_STATUS = text(
    """
    SELECT t.transaction_id, t.status, count(p.posting_id) AS legs
    FROM transactions AS t
    LEFT JOIN postings AS p ON p.transaction_id = t.transaction_id
    GROUP BY t.transaction_id
    HAVING (t.status = 'posted') <> (count(p.posting_id) > 0)
    ORDER BY t.transaction_id
    """
)

# A transaction named by more than one reversal.
_REVERSED_TWICE = text(
    """
    SELECT reverses_transaction_id AS transaction_id,
        array_agg(transaction_id ORDER BY seq) AS reversals
    FROM transactions
    WHERE reverses_transaction_id IS NOT NULL
    GROUP BY reverses_transaction_id
    HAVING count(*) > 1
    ORDER BY reverses_transaction_id
    """
)

# Legs in a currency other than their account's.
_FOREIGN_CURRENCY_LEGS = text(
    """
    SELECT p.transaction_id, p.account_id, p.currency AS leg_currency, a.currency
    FROM postings AS p JOIN accounts AS a ON a.account_id = p.account_id
    WHERE p.currency <> a.currency
    ORDER BY p.transaction_id, p.posting_id
    """
)

# A posted transaction whose source was not debited its amount, or whose destination was not
# credited its amount (an exchange credits to_amount in to_currency).
_LEGS_VS_HEADER = text(
    """
    SELECT t.transaction_id,
        coalesce(sum(p.amount) FILTER (
            WHERE p.account_id = t.from_account_id AND p.currency = t.currency), 0) AS debited,
        coalesce(sum(p.amount) FILTER (
            WHERE p.account_id = t.to_account_id
              AND p.currency = coalesce(t.to_currency, t.currency)), 0) AS credited,
        t.amount, coalesce(t.to_amount, t.amount) AS to_amount
    FROM transactions AS t JOIN postings AS p ON p.transaction_id = t.transaction_id
    WHERE t.status = 'posted'
    GROUP BY t.transaction_id
    HAVING (t.from_account_id IS NOT NULL AND coalesce(sum(p.amount) FILTER (
                WHERE p.account_id = t.from_account_id AND p.currency = t.currency), 0)
            <> -t.amount)
        OR (t.to_account_id IS NOT NULL AND coalesce(sum(p.amount) FILTER (
                WHERE p.account_id = t.to_account_id
                  AND p.currency = coalesce(t.to_currency, t.currency)), 0)
            <> coalesce(t.to_amount, t.amount))
    ORDER BY t.transaction_id
    """
)

_COUNTS = text(
    "SELECT (SELECT count(*) FROM accounts) AS accounts, "
    "(SELECT count(*) FROM transactions) AS transactions"
)


def _money(currency: str, amount: Any) -> Money | None:
    """An amount for the report; None if corruption pushed it out of the int64 range."""
    value = int(amount)
    return Money(currency, value) if INT64_MIN <= value <= INT64_MAX else None


class VerificationRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def use_snapshot(self) -> None:
        """Make every following query of this transaction read the same snapshot.

        Must be the transaction's first statement.
        """
        await self._conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))

    async def counts(self) -> tuple[int, int]:
        """(accounts, transactions) in the snapshot."""
        row = (await self._conn.execute(_COUNTS)).one()
        return int(row.accounts), int(row.transactions)

    async def violations(self) -> list[LedgerViolation]:
        """Every broken invariant, grouped by invariant, each group ordered by id."""
        found: list[LedgerViolation] = []
        for row in await self._conn.execute(_UNBALANCED):
            found.append(
                LedgerViolation(
                    invariant=LedgerInvariant.BALANCED_POSTINGS,
                    description=f"postings of transaction {row.transaction_id} sum to "
                    f"{row.total} {row.currency}, not zero",
                    transaction_id=row.transaction_id,
                    expected=Money(row.currency, 0),
                    actual=_money(row.currency, row.total),
                )
            )
        for row in await self._conn.execute(_POSTED_DRIFT):
            found.append(
                LedgerViolation(
                    invariant=LedgerInvariant.POSTED_BALANCE,
                    description=f"account {row.account_id} stores posted {row.posted} but its "
                    f"postings sum to {row.total}",
                    account_id=row.account_id,
                    expected=_money(row.currency, row.total),
                    actual=_money(row.currency, row.posted),
                )
            )
        for row in await self._conn.execute(_OUT_OF_RANGE):
            found.append(
                LedgerViolation(
                    invariant=LedgerInvariant.BALANCE_IN_RANGE,
                    description=f"account {row.account_id} has a balance of {row.balance} "
                    f"{row.currency} minor units, outside the int64 range",
                    account_id=row.account_id,
                )
            )
        for row in await self._conn.execute(_PENDING_DRIFT):
            found.append(
                LedgerViolation(
                    invariant=LedgerInvariant.PENDING_BALANCE,
                    description=f"account {row.account_id} stores pending_out "
                    f"{row.pending_out} but its open holds sum to {row.total}",
                    account_id=row.account_id,
                    expected=_money(row.currency, row.total),
                    actual=Money(row.currency, row.pending_out),
                )
            )
        for row in await self._conn.execute(_NEGATIVE):
            found.append(_negative(row))
        for row in await self._conn.execute(_POSTINGS_VS_STATUS):
            problem = "has no postings" if row.legs == 0 else f"has {row.legs} postings"
            found.append(
                LedgerViolation(
                    invariant=LedgerInvariant.POSTINGS_MATCH_STATUS,
                    description=f"{row.status} transaction {row.transaction_id} {problem}",
                    transaction_id=row.transaction_id,
                )
            )
        for row in await self._conn.execute(_FOREIGN_CURRENCY_LEGS):
            found.append(
                LedgerViolation(
                    invariant=LedgerInvariant.POSTINGS_MATCH_TRANSACTION,
                    description=f"transaction {row.transaction_id} posts {row.leg_currency} to "
                    f"{row.currency} account {row.account_id}",
                    transaction_id=row.transaction_id,
                    account_id=row.account_id,
                )
            )
        for row in await self._conn.execute(_LEGS_VS_HEADER):
            found.append(
                LedgerViolation(
                    invariant=LedgerInvariant.POSTINGS_MATCH_TRANSACTION,
                    description=f"transaction {row.transaction_id} says {row.amount} from its "
                    f"source and {row.to_amount} to its destination, but its legs move "
                    f"{-row.debited} and {row.credited}",
                    transaction_id=row.transaction_id,
                )
            )
        for row in await self._conn.execute(_REVERSED_TWICE):
            reversals: list[UUID] = list(row.reversals)
            found.append(
                LedgerViolation(
                    invariant=LedgerInvariant.SINGLE_REVERSAL,
                    description=f"transaction {row.transaction_id} is reversed "
                    f"{len(reversals)} times: {', '.join(str(r) for r in reversals)}",
                    transaction_id=row.transaction_id,
                )
            )
        return found


def _negative(row: Any) -> LedgerViolation:
    if row.pending_out < 0:
        what, value = "pending_out", row.pending_out
    elif row.posted < 0:
        what, value = "posted", row.posted
    else:
        what, value = "available", row.posted - row.pending_out
    return LedgerViolation(
        invariant=LedgerInvariant.NON_NEGATIVE,
        description=f"{row.kind} account {row.account_id} has {what} {value} below zero",
        account_id=row.account_id,
        expected=Money(row.currency, 0),
        actual=_money(row.currency, value),
    )


__all__ = ["VerificationRepository"]
