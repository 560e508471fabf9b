"""Ledger invariants checked straight in SQL, independent of the code under test."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# An account's balance: its row plus the appended changes not folded into it yet (system
# accounts only), as numeric: that sum can pass the bigint range. Use with the accounts table
# aliased as ``a``.
BALANCE = (
    "a.posted + coalesce((SELECT sum(d.amount) FROM balance_deltas d "
    "WHERE d.account_id = a.account_id), 0)"
)

# Every account's (id, balance as "posted", pending_out), for before/after comparisons.
ACCOUNT_BALANCES = (
    f"SELECT account_id, {BALANCE} AS posted, pending_out FROM accounts a ORDER BY account_id"
)


async def ledger_violations(engine: AsyncEngine) -> list[str]:
    """Every broken invariant, as text; an empty list is a healthy ledger."""
    problems: list[str] = []
    async with engine.connect() as conn:
        unbalanced = await conn.execute(
            text(
                "SELECT transaction_id, currency, sum(amount) FROM postings "
                "GROUP BY transaction_id, currency HAVING sum(amount) <> 0"
            )
        )
        problems += [f"unbalanced transaction {row[0]} ({row[1]}: {row[2]})" for row in unbalanced]
        drift = await conn.execute(
            text(
                f"SELECT a.account_id, {BALANCE}, coalesce(sum(p.amount), 0) FROM accounts a "
                "LEFT JOIN postings p ON p.account_id = a.account_id "
                f"GROUP BY a.account_id HAVING {BALANCE} <> coalesce(sum(p.amount), 0)"
            )
        )
        problems += [f"account {row[0]} posted {row[1]} != postings {row[2]}" for row in drift]
        negative = await conn.execute(
            text(
                "SELECT account_id FROM accounts "
                "WHERE kind = 'user' AND (posted - pending_out < 0 OR pending_out < 0)"
            )
        )
        problems += [f"user account {row[0]} is negative" for row in negative]
        total = await conn.execute(
            text(
                f"SELECT currency, sum({BALANCE}) FROM accounts a "
                f"GROUP BY currency HAVING sum({BALANCE}) <> 0"
            )
        )
        problems += [f"{row[0]} does not sum to zero across accounts: {row[1]}" for row in total]
    return problems


async def count(engine: AsyncEngine, query: str, **params: object) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(query), params)).scalar_one())
