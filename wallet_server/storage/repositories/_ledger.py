"""Accounts, transactions and postings."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
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
from wallet_server.storage._driver import Driver, fetch_rows, run_sql
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
        posted=int(row.posted),  # a settlement listing sums it as numeric: it may pass bigint
        pending_out=row.pending_out,
        frozen=row.frozen,
        created_at=row.created_at,
    )


def _transaction(row: Any, legs: Sequence[Posting], reversed_by: UUID | None = None) -> Transaction:
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
        partner_id=row.partner_id,
        order_id=row.order_id,
        promotion_id=row.promotion_id,
        to_amount=None if row.to_amount is None else Money(row.to_currency, row.to_amount),
        exchange_rate=row.exchange_rate or "",
        status_message=row.status_message,
        reversed_by_transaction_id=reversed_by,
    )


_TX_COLUMNS = (
    "transaction_id, kind, status, currency, amount, from_account_id, to_account_id, memo, "
    "external_reference, initiator, reverses_transaction_id, created_at, posted_at, partner_id, "
    "order_id, promotion_id, to_amount, to_currency, exchange_rate, status_message"
)

# Apply per-account changes of (posted, pending_out): user accounts (and any hold) on the
# account row, which the caller has locked; a system account's posted change is appended to
# balance_deltas, so movements never wait for its row. Returns the updated rows.
_APPLY_DELTAS = """
    d AS (
        SELECT d.account_id, d.posted, d.pending, acc.kind
        FROM unnest(CAST(:delta_accounts AS uuid[]), CAST(:delta_posted AS bigint[]),
                    CAST(:delta_pending AS bigint[])) AS d(account_id, posted, pending)
        JOIN accounts AS acc ON acc.account_id = d.account_id
    ),
    deferred AS (
        INSERT INTO balance_deltas (account_id, amount)
        SELECT d.account_id, d.posted FROM d
        WHERE d.kind <> 'user' AND d.pending = 0 AND d.posted <> 0
        ORDER BY d.account_id
    )
    UPDATE accounts AS a
    SET posted = a.posted + d.posted, pending_out = a.pending_out + d.pending
    FROM d
    WHERE a.account_id = d.account_id AND (d.kind = 'user' OR d.pending <> 0)
    RETURNING a.*
"""

# The legs and balance changes of a transaction, applied in the same statement as its row.
_LEGS_AND_BALANCES = f"""
    legs AS (
        INSERT INTO postings (transaction_id, account_id, amount, currency, created_at)
        SELECT tx.transaction_id, leg.account_id, leg.amount, leg.currency, :legs_at
        FROM tx, unnest(CAST(:leg_accounts AS uuid[]), CAST(:leg_amounts AS bigint[]),
                        CAST(:leg_currencies AS text[])) AS leg(account_id, amount, currency)
    ),
    {_APPLY_DELTAS}
"""

# Insert a transaction with its legs and balance changes: one round trip.
_RECORD = f"""
    WITH tx AS (
        INSERT INTO transactions ({_TX_COLUMNS})
        VALUES (:transaction_id, :kind, :status, :currency, :amount, :from_account_id,
            :to_account_id, :memo, :external_reference, :initiator, :reverses_transaction_id,
            :created_at, :posted_at, :partner_id, :order_id, :promotion_id, :to_amount,
            :to_currency, :exchange_rate, :status_message)
        RETURNING transaction_id
    ),
    {_LEGS_AND_BALANCES}
    """

# Move a pending transaction to its final status, with its legs and balance changes.
_SETTLE = f"""
    WITH tx AS (
        UPDATE transactions
        SET status = :status, posted_at = :posted_at, status_message = :status_message,
            external_reference = :external_reference
        WHERE transaction_id = :transaction_id
        RETURNING transaction_id
    ),
    {_LEGS_AND_BALANCES}
    """


# Many transactions with their legs and balance changes in one statement (a partner batch).
# Rows are inserted in array order, so their ``seq`` follows it.
_RECORD_MANY = text(
    f"""
    WITH tx AS (
        INSERT INTO transactions ({_TX_COLUMNS})
        SELECT t.transaction_id, t.kind, t.status, t.currency, t.amount, t.from_account_id,
            t.to_account_id, t.memo, t.external_reference, :initiator,
            t.reverses_transaction_id, t.created_at, t.posted_at, t.partner_id, t.order_id,
            t.promotion_id, t.to_amount, t.to_currency, t.exchange_rate, t.status_message
        FROM unnest(
            CAST(:transaction_ids AS uuid[]), CAST(:kinds AS text[]), CAST(:statuses AS text[]),
            CAST(:currencies AS text[]), CAST(:amounts AS bigint[]),
            CAST(:from_account_ids AS uuid[]), CAST(:to_account_ids AS uuid[]),
            CAST(:memos AS text[]), CAST(:external_references AS text[]),
            CAST(:reverses_transaction_ids AS uuid[]), CAST(:created_ats AS timestamptz[]),
            CAST(:posted_ats AS timestamptz[]), CAST(:partner_ids AS uuid[]),
            CAST(:order_ids AS uuid[]), CAST(:promotion_ids AS uuid[]),
            CAST(:to_amounts AS bigint[]), CAST(:to_currencies AS text[]),
            CAST(:exchange_rates AS text[]), CAST(:status_messages AS text[])
        ) WITH ORDINALITY AS t(transaction_id, kind, status, currency, amount, from_account_id,
            to_account_id, memo, external_reference, reverses_transaction_id, created_at,
            posted_at, partner_id, order_id, promotion_id, to_amount, to_currency,
            exchange_rate, status_message, n)
        ORDER BY t.n
        RETURNING transaction_id
    ),
    legs AS (
        INSERT INTO postings (transaction_id, account_id, amount, currency, created_at)
        SELECT leg.transaction_id, leg.account_id, leg.amount, leg.currency, leg.created_at
        FROM unnest(CAST(:leg_transactions AS uuid[]), CAST(:leg_accounts AS uuid[]),
                    CAST(:leg_amounts AS bigint[]), CAST(:leg_currencies AS text[]),
                    CAST(:leg_times AS timestamptz[]))
            WITH ORDINALITY AS leg(transaction_id, account_id, amount, currency, created_at, n)
        JOIN tx ON tx.transaction_id = leg.transaction_id
        ORDER BY leg.n
    ),
    {_APPLY_DELTAS}
    """
)


_LOCK_ACCOUNTS = """
    SELECT * FROM (
        SELECT * FROM accounts
        WHERE account_id = ANY(CAST(:ids AS uuid[])) AND kind = 'user'
        ORDER BY account_id
        FOR UPDATE
    ) AS locked
    UNION ALL
    SELECT * FROM accounts WHERE account_id = ANY(CAST(:ids AS uuid[])) AND kind <> 'user'
    """

_GET_ACCOUNT = "SELECT * FROM accounts WHERE account_id = :account_id"

# The one system account of a kind, currency and partner, or of the house (no partner).
# "kind <> 'user'" lets even a generic plan use the partial unique index on system accounts.
_SYSTEM_ACCOUNT = """
    SELECT account_id FROM accounts
    WHERE kind <> 'user' AND kind = :kind AND currency = :currency AND partner_id = :partner_id
"""
_HOUSE_ACCOUNT = """
    SELECT account_id FROM accounts
    WHERE kind <> 'user' AND kind = :kind AND currency = :currency AND partner_id IS NULL
"""

_ADD_SYSTEM_ACCOUNT = """
    INSERT INTO accounts (account_id, kind, currency, partner_id)
    VALUES (:account_id, :kind, :currency, :partner_id)
    ON CONFLICT DO NOTHING
"""

# A partner's settlement accounts with their balances as of now: the row plus the changes
# appended since the last fold (the fold moves changes into the row in one transaction, so one
# snapshot sees each change exactly once).
_SETTLEMENT_ACCOUNTS = text(
    """
    WITH mine AS (
        SELECT * FROM accounts
        WHERE kind = 'settlement' AND partner_id = :partner_id
            AND (CAST(:after AS text) IS NULL OR currency > CAST(:after AS text))
        ORDER BY currency
        LIMIT :limit
    ),
    unfolded AS (
        SELECT d.account_id, sum(d.amount) AS amount
        FROM balance_deltas AS d JOIN mine USING (account_id)
        GROUP BY d.account_id
    )
    SELECT m.account_id, m.kind, m.currency, m.owner_user_id, m.partner_id,
        m.posted + COALESCE(u.amount, 0) AS posted, m.pending_out, m.frozen,
        m.created_at
    FROM mine AS m LEFT JOIN unfolded AS u USING (account_id)
    ORDER BY m.currency
    """
)

_FOLD_LOCK = 7746288  # one folder at a time: folders update accounts in no fixed order

# The accounts of the oldest appended changes: all their changes removed and added to their
# rows, in one statement. An account whose row cannot hold the sum (a bigint) keeps it as
# changes, merged into as few as hold it (each within a bigint) and queued behind the others:
# nothing is lost, its changes do not pile up in front of other accounts', and it folds once
# changes the other way bring its sum back into range. Amounts are summed from the rows the
# statement deleted, not from what it read before.
_FOLD_DELTAS = text(
    """
    WITH oldest AS (
        SELECT account_id FROM balance_deltas ORDER BY delta_id LIMIT :limit
    ),
    moved AS (
        DELETE FROM balance_deltas AS d
        WHERE d.account_id IN (SELECT account_id FROM oldest)
        RETURNING d.account_id, d.amount
    ),
    sums AS (
        SELECT m.account_id, sum(m.amount) AS total, count(*) AS changes,
            a.posted + sum(m.amount)
                BETWEEN -9223372036854775808 AND 9223372036854775807 AS fits
        FROM moved AS m JOIN accounts AS a USING (account_id)
        GROUP BY m.account_id, a.posted
    ),
    folded AS (
        UPDATE accounts AS a SET posted = a.posted + s.total
        FROM sums AS s WHERE a.account_id = s.account_id AND s.fits
    ),
    kept AS (
        INSERT INTO balance_deltas (account_id, amount)
        SELECT s.account_id, CAST(part.amount AS bigint)
        FROM sums AS s
        CROSS JOIN LATERAL (
            SELECT sign(s.total) * 9223372036854775807 AS amount
            FROM generate_series(1, CAST(trunc(abs(s.total) / 9223372036854775807) AS bigint))
            UNION ALL
            SELECT s.total
                - sign(s.total) * 9223372036854775807 * trunc(abs(s.total) / 9223372036854775807)
        ) AS part
        WHERE NOT s.fits AND part.amount <> 0
    )
    SELECT
        (SELECT count(*) FROM oldest) AS taken,
        (SELECT coalesce(sum(changes), 0) FROM sums WHERE fits) AS folded,
        (SELECT array_agg(account_id) FROM sums WHERE NOT fits) AS out_of_range
    """
)


@dataclass(frozen=True, slots=True)
class Fold:
    """What one fold did: how many of the oldest changes it took (their accounts' other
    changes went with them), how many changes it folded into rows, and the accounts whose
    rows could not hold the sum of theirs (kept as changes)."""

    taken: int
    folded: int
    out_of_range: frozenset[UUID]


def _balance_params(
    legs: tuple[Posting, ...], currency: str, holds: Mapping[UUID, int]
) -> dict[str, list[Any]]:
    """Postings and per-account (posted, pending_out) deltas as array parameters."""
    deltas: dict[UUID, list[int]] = {}
    for leg in legs:
        deltas.setdefault(leg.account_id, [0, 0])[0] += leg.amount
    for account_id, held in holds.items():
        deltas.setdefault(account_id, [0, 0])[1] += held
    ordered = sorted(deltas)  # the same order as the locks were taken
    return {
        "leg_accounts": [leg.account_id for leg in legs],
        "leg_amounts": [leg.amount for leg in legs],
        "leg_currencies": [leg.currency or currency for leg in legs],
        "delta_accounts": ordered,
        "delta_posted": [deltas[a][0] for a in ordered],
        "delta_pending": [deltas[a][1] for a in ordered],
    }


class LedgerRepository:
    """The statements of every money call (read, lock, record, settle) run on the driver
    connection; ``driver`` is the psycopg connection beneath ``conn``, in the same
    transaction."""

    def __init__(self, conn: AsyncConnection, driver: Driver) -> None:
        self._conn = conn
        self._driver = driver

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
        """The single system account of this kind/partner/currency, created on first use.

        Looked up before any insert: an insert that meets the existing row in the unique
        index would wait for whichever transaction is updating that row."""
        key = {"kind": kind.value, "currency": currency, "partner_id": partner_id}
        lookup = _HOUSE_ACCOUNT if partner_id is None else _SYSTEM_ACCOUNT
        found = await fetch_rows(self._driver, lookup, key)
        if found:
            existing: UUID = found[0].account_id
            return existing
        await run_sql(self._driver, _ADD_SYSTEM_ACCOUNT, {**key, "account_id": account_id})
        created: UUID = (await fetch_rows(self._driver, lookup, key))[0].account_id
        return created

    async def get_account(self, account_id: UUID) -> Account | None:
        found = await fetch_rows(self._driver, _GET_ACCOUNT, {"account_id": account_id})
        return _account(found[0]) if found else None

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

    async def list_settlement_accounts(
        self, partner_id: UUID, *, after: str | None, limit: int
    ) -> list[Account]:
        """The partner's settlement accounts after currency ``after``, by currency, with
        balances that include the appended changes not folded yet."""
        found = await self._conn.execute(
            _SETTLEMENT_ACCOUNTS, {"partner_id": partner_id, "after": after, "limit": limit}
        )
        return [_account(row) for row in found]

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
        """The accounts; user accounts locked in id order (so concurrent movers cannot
        deadlock). System accounts are read, not locked: they may go negative, so nothing
        about them is decided under a lock, and their balance changes are appended to
        ``balance_deltas`` rather than written to their row. Their ``posted`` here leaves
        out deltas not folded yet."""
        found = await fetch_rows(self._driver, _LOCK_ACCOUNTS, {"ids": sorted(set(account_ids))})
        return {row.account_id: _account(row) for row in found}

    async def fold_balance_deltas(self, *, limit: int) -> Fold | None:
        """Fold the accounts of the ``limit`` oldest appended system-account changes into
        their rows (see :class:`Fold`); None when another server is folding right now."""
        held = await self._conn.execute(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _FOLD_LOCK}
        )
        if not held.scalar_one():
            return None
        row = (await self._conn.execute(_FOLD_DELTAS, {"limit": limit})).one()
        return Fold(int(row.taken), int(row.folded), frozenset(row.out_of_range or ()))

    async def record(
        self, tx: Transaction, *, initiator: str, holds: Mapping[UUID, int] | None = None
    ) -> dict[UUID, Account]:
        """Write ``tx`` (any status) with its legs; apply the legs to ``posted`` and ``holds``
        (account → change of ``pending_out``). Returns the changed accounts as they are now."""
        found = await fetch_rows(
            self._driver,
            _RECORD,
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
                "legs_at": tx.posted_at or tx.created_at,
                "partner_id": tx.partner_id,
                "order_id": tx.order_id,
                "promotion_id": tx.promotion_id,
                "to_amount": None if tx.to_amount is None else tx.to_amount.amount_minor,
                "to_currency": None if tx.to_amount is None else tx.to_amount.currency,
                "exchange_rate": tx.exchange_rate or None,
                "status_message": tx.status_message,
                **_balance_params(tx.postings, tx.amount.currency, holds or {}),
            },
        )
        return {row.account_id: _account(row) for row in found}

    async def record_posted(self, tx: Transaction, *, initiator: str) -> dict[UUID, Account]:
        return await self.record(tx, initiator=initiator)

    async def record_many(
        self,
        txs: Sequence[Transaction],
        *,
        initiator: str,
        holds: Mapping[UUID, int] | None = None,
    ) -> dict[UUID, Account]:
        """Write many transactions (any status) with their legs in ONE statement, in order;
        apply all legs to ``posted`` and the net ``holds`` to ``pending_out``. The accounts
        must already be locked. Returns the changed accounts as they are now."""
        if not txs:
            return {}
        legs = [(tx, leg) for tx in txs for leg in tx.postings]
        balances = _balance_params(
            tuple(leg for _, leg in legs), txs[0].amount.currency, holds or {}
        )
        balances["leg_currencies"] = [leg.currency or tx.amount.currency for tx, leg in legs]
        result = await self._conn.execute(
            _RECORD_MANY,
            {
                "initiator": initiator,
                "transaction_ids": [tx.transaction_id for tx in txs],
                "kinds": [tx.kind.value for tx in txs],
                "statuses": [tx.status.value for tx in txs],
                "currencies": [tx.amount.currency for tx in txs],
                "amounts": [tx.amount.amount_minor for tx in txs],
                "from_account_ids": [tx.from_account_id for tx in txs],
                "to_account_ids": [tx.to_account_id for tx in txs],
                "memos": [tx.memo for tx in txs],
                "external_references": [tx.external_reference for tx in txs],
                "reverses_transaction_ids": [tx.reverses_transaction_id for tx in txs],
                "created_ats": [tx.created_at for tx in txs],
                "posted_ats": [tx.posted_at for tx in txs],
                "partner_ids": [tx.partner_id for tx in txs],
                "order_ids": [tx.order_id for tx in txs],
                "promotion_ids": [tx.promotion_id for tx in txs],
                "to_amounts": [
                    None if tx.to_amount is None else tx.to_amount.amount_minor for tx in txs
                ],
                "to_currencies": [
                    None if tx.to_amount is None else tx.to_amount.currency for tx in txs
                ],
                "exchange_rates": [tx.exchange_rate or None for tx in txs],
                "status_messages": [tx.status_message for tx in txs],
                "leg_transactions": [tx.transaction_id for tx, _ in legs],
                "leg_times": [tx.posted_at or tx.created_at for tx, _ in legs],
                **balances,
            },
        )
        return {row.account_id: _account(row) for row in result}

    async def settle(
        self,
        tx: Transaction,
        *,
        legs: tuple[Posting, ...],
        holds: Mapping[UUID, int],
    ) -> dict[UUID, Account]:
        """Record the new status of a pending ``tx`` (already decided by the domain), add its
        ``legs`` and apply ``holds`` (negative: released). Returns the changed accounts."""
        found = await fetch_rows(
            self._driver,
            _SETTLE,
            {
                "transaction_id": tx.transaction_id,
                "status": tx.status.value,
                "posted_at": tx.posted_at,
                "legs_at": tx.posted_at or tx.created_at,
                "status_message": tx.status_message,
                "external_reference": tx.external_reference,
                **_balance_params(legs, tx.amount.currency, holds),
            },
        )
        return {row.account_id: _account(row) for row in found}

    async def lock_transaction(self, transaction_id: UUID) -> Transaction | None:
        """The transaction, its row locked until the end of the unit of work."""
        row = (
            await self._conn.execute(
                select(transactions)
                .where(transactions.c.transaction_id == transaction_id)
                .with_for_update()
            )
        ).first()
        if row is None:
            return None
        legs = await self._legs([transaction_id])
        reversed_by = await self._reversed_by([transaction_id])
        return _transaction(row, legs.get(transaction_id, []), reversed_by.get(transaction_id))

    async def get_transaction(self, transaction_id: UUID) -> Transaction | None:
        row = (
            await self._conn.execute(
                select(transactions).where(transactions.c.transaction_id == transaction_id)
            )
        ).first()
        if row is None:
            return None
        legs = await self._legs([transaction_id])
        reversed_by = await self._reversed_by([transaction_id])
        return _transaction(row, legs.get(transaction_id, []), reversed_by.get(transaction_id))

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
        reversed_by = await self._reversed_by([r.transaction_id for r in rows])
        page = tuple(
            _transaction(r, legs.get(r.transaction_id, []), reversed_by.get(r.transaction_id))
            for r in rows
        )
        return TransactionPage(page, rows[-1].seq if has_more and rows else None)

    async def _reversed_by(self, transaction_ids: Sequence[UUID]) -> dict[UUID, UUID]:
        """Original id → id of its REVERSAL, for those of ``transaction_ids`` reversed."""
        if not transaction_ids:
            return {}
        stmt = select(transactions.c.reverses_transaction_id, transactions.c.transaction_id).where(
            transactions.c.reverses_transaction_id.in_(transaction_ids)
        )
        return {row[0]: row[1] for row in await self._conn.execute(stmt)}

    async def _legs(self, transaction_ids: Sequence[UUID]) -> dict[UUID, list[Posting]]:
        if not transaction_ids:
            return {}
        stmt = (
            select(
                postings.c.transaction_id,
                postings.c.account_id,
                postings.c.amount,
                postings.c.currency,
            )
            .where(postings.c.transaction_id.in_(transaction_ids))
            .order_by(postings.c.posting_id)
        )
        legs: dict[UUID, list[Posting]] = {}
        for row in await self._conn.execute(stmt):
            legs.setdefault(row.transaction_id, []).append(
                Posting(row.account_id, row.amount, row.currency)
            )
        return legs


__all__ = ["Fold", "LedgerRepository", "TransactionPage"]
