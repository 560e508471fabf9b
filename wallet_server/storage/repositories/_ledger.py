"""Accounts, transactions and postings."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import and_, select, text, union_all
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from wallet_server.domain import (
    Account,
    AccountKind,
    Money,
    Posting,
    Transaction,
    TransactionKind,
    TransactionStatus,
)
from wallet_server.storage._tables import accounts, postings, transactions


@dataclass(frozen=True, slots=True)
class TransactionPage:
    transactions: tuple[Transaction, ...]
    next_before_seq: int | None  # cursor for the next (older) page; None at the end


def _account(row: Any) -> Account:
    return Account(
        account_id=row.account_id,
        kind=AccountKind(row.kind),
        currency=row.currency,
        owner_user_id=row.owner_user_id,
        partner_id=row.partner_id,
        posted=row.posted,
        pending_out=row.pending_out,
        frozen=row.frozen,
        created_at=row.created_at,
    )


def _transaction(row: Any, legs: Sequence[Posting]) -> Transaction:
    return Transaction(
        transaction_id=row.transaction_id,
        kind=TransactionKind(row.kind),
        status=TransactionStatus(row.status),
        amount=Money(row.currency, row.amount),
        from_account_id=row.from_account_id,
        to_account_id=row.to_account_id,
        memo=row.memo,
        external_reference=row.external_reference,
        created_at=row.created_at,
        posted_at=row.posted_at,
        postings=tuple(legs),
        reverses_transaction_id=row.reverses_transaction_id,
    )


# Insert the transaction, its legs and the balance changes in one round trip.
_RECORD_POSTED = text(
    """
    WITH new_tx AS (
        INSERT INTO transactions (transaction_id, kind, status, currency, amount,
            from_account_id, to_account_id, memo, external_reference, initiator,
            reverses_transaction_id, created_at, posted_at)
        VALUES (:transaction_id, :kind, :status, :currency, :amount,
            :from_account_id, :to_account_id, :memo, :external_reference, :initiator,
            :reverses_transaction_id, :created_at, :posted_at)
        RETURNING transaction_id
    ), legs AS (
        INSERT INTO postings (transaction_id, account_id, amount, currency, created_at)
        SELECT new_tx.transaction_id, leg.account_id, leg.amount, :currency, :created_at
        FROM new_tx, unnest(CAST(:leg_accounts AS uuid[]), CAST(:leg_amounts AS bigint[]))
            AS leg(account_id, amount)
        RETURNING account_id, amount
    )
    UPDATE accounts AS a SET posted = a.posted + legs.amount
    FROM legs WHERE a.account_id = legs.account_id
    """
)


class LedgerRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add_user_account(
        self, *, account_id: UUID, owner_user_id: UUID, currency: str, now: datetime
    ) -> Account | None:
        """Open a user's account; None when they already have one in ``currency``."""
        row = (
            await self._conn.execute(
                pg_insert(accounts)
                .values(
                    account_id=account_id,
                    kind=AccountKind.USER.value,
                    currency=currency,
                    owner_user_id=owner_user_id,
                    created_at=now,
                )
                .on_conflict_do_nothing()
                .returning(*accounts.c)
            )
        ).first()
        return None if row is None else _account(row)

    async def ensure_system_account(
        self,
        *,
        account_id: UUID,
        kind: AccountKind,
        currency: str,
        partner_id: UUID | None = None,
    ) -> UUID:
        """The single system account of this kind/partner/currency, created on first use."""
        stmt = (
            pg_insert(accounts)
            .values(
                account_id=account_id, kind=kind.value, currency=currency, partner_id=partner_id
            )
            .on_conflict_do_nothing()
        )
        await self._conn.execute(stmt)
        found = await self._conn.execute(
            select(accounts.c.account_id).where(
                accounts.c.kind == kind.value,
                accounts.c.currency == currency,
                accounts.c.partner_id.is_(None)
                if partner_id is None
                else accounts.c.partner_id == partner_id,
            )
        )
        account_id_found: UUID = found.scalar_one()
        return account_id_found

    async def get_account(self, account_id: UUID) -> Account | None:
        row = (
            await self._conn.execute(select(accounts).where(accounts.c.account_id == account_id))
        ).first()
        return None if row is None else _account(row)

    async def list_user_accounts(
        self, owner_user_id: UUID, *, after: tuple[datetime, UUID] | None, limit: int
    ) -> list[Account]:
        stmt = select(accounts).where(accounts.c.owner_user_id == owner_user_id)
        if after is not None:
            created_at, account_id = after
            stmt = stmt.where(
                (accounts.c.created_at > created_at)
                | and_(accounts.c.created_at == created_at, accounts.c.account_id > account_id)
            )
        stmt = stmt.order_by(accounts.c.created_at, accounts.c.account_id).limit(limit)
        return [_account(row) for row in await self._conn.execute(stmt)]

    async def user_account_in_currency(self, owner_user_id: UUID, currency: str) -> UUID | None:
        """The user's first-opened account in ``currency``: where payments to them land."""
        row = (
            await self._conn.execute(
                select(accounts.c.account_id)
                .where(accounts.c.owner_user_id == owner_user_id, accounts.c.currency == currency)
                .order_by(accounts.c.created_at, accounts.c.account_id)
                .limit(1)
            )
        ).first()
        return None if row is None else row.account_id

    async def lock_accounts(self, account_ids: Collection[UUID]) -> dict[UUID, Account]:
        """Lock the rows in a deterministic order (by id) so concurrent movers cannot deadlock."""
        stmt = (
            select(accounts)
            .where(accounts.c.account_id.in_(sorted(set(account_ids))))
            .order_by(accounts.c.account_id)
            .with_for_update()
        )
        return {row.account_id: _account(row) for row in await self._conn.execute(stmt)}

    async def record_posted(self, tx: Transaction, *, initiator: str) -> None:
        """Write a posted transaction with its legs and apply them to the balances."""
        await self._conn.execute(
            _RECORD_POSTED,
            {
                "transaction_id": tx.transaction_id,
                "kind": tx.kind.value,
                "status": tx.status.value,
                "currency": tx.amount.currency,
                "amount": tx.amount.amount_minor,
                "from_account_id": tx.from_account_id,
                "to_account_id": tx.to_account_id,
                "memo": tx.memo,
                "external_reference": tx.external_reference,
                "initiator": initiator,
                "reverses_transaction_id": tx.reverses_transaction_id,
                "created_at": tx.created_at,
                "posted_at": tx.posted_at,
                "leg_accounts": [p.account_id for p in tx.postings],
                "leg_amounts": [p.amount for p in tx.postings],
            },
        )

    async def get_transaction(self, transaction_id: UUID) -> Transaction | None:
        row = (
            await self._conn.execute(
                select(transactions).where(transactions.c.transaction_id == transaction_id)
            )
        ).first()
        if row is None:
            return None
        legs = await self._legs([transaction_id])
        return _transaction(row, legs.get(transaction_id, []))

    async def list_account_transactions(
        self,
        account_id: UUID,
        *,
        before_seq: int | None,
        limit: int,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        kinds: Collection[TransactionKind] = (),
    ) -> TransactionPage:
        """Newest first; ``before_seq`` continues an earlier page."""

        def side(column: Any) -> Any:
            stmt = select(transactions).where(column == account_id)
            if before_seq is not None:
                stmt = stmt.where(transactions.c.seq < before_seq)
            if start_time is not None:
                stmt = stmt.where(transactions.c.created_at >= start_time)
            if end_time is not None:
                stmt = stmt.where(transactions.c.created_at < end_time)
            if kinds:
                stmt = stmt.where(transactions.c.kind.in_([k.value for k in kinds]))
            return stmt.order_by(transactions.c.seq.desc()).limit(limit + 1)

        both = union_all(
            side(transactions.c.from_account_id).subquery().select(),
            side(transactions.c.to_account_id).subquery().select(),
        ).subquery()
        stmt = select(both).order_by(both.c.seq.desc()).limit(limit + 1)
        rows = list(await self._conn.execute(stmt))
        has_more = len(rows) > limit
        rows = rows[:limit]
        legs = await self._legs([r.transaction_id for r in rows])
        page = tuple(_transaction(r, legs.get(r.transaction_id, [])) for r in rows)
        return TransactionPage(page, rows[-1].seq if has_more and rows else None)

    async def _legs(self, transaction_ids: Sequence[UUID]) -> dict[UUID, list[Posting]]:
        if not transaction_ids:
            return {}
        stmt = (
            select(postings.c.transaction_id, postings.c.account_id, postings.c.amount)
            .where(postings.c.transaction_id.in_(transaction_ids))
            .order_by(postings.c.posting_id)
        )
        legs: dict[UUID, list[Posting]] = {}
        for row in await self._conn.execute(stmt):
            legs.setdefault(row.transaction_id, []).append(Posting(row.account_id, row.amount))
        return legs


__all__ = ["LedgerRepository", "TransactionPage"]
