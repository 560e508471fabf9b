"""SQL fragments shared by the set-based writers (movement groups, partner batches).

Each is a data-modifying CTE over arrays passed with binary parameters on the psycopg
driver connection; a writer joins the ones it needs as ``WITH a, b, c SELECT 1``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from operator import attrgetter
from typing import Any
from uuid import UUID

from wallet_server.domain import Account, AccountKind, Transaction, id_text
from wallet_server.storage._arrays import (
    BinaryArray,
    bigint_array,
    text_array,
    timestamptz_array,
    uuid_array,
)


@cache
def with_statement(*ctes: str, select: str = "1") -> str:
    """``WITH a, b, c SELECT 1`` (or ``SELECT <select>``) with runs of whitespace folded.

    psycopg caches a query's placeholder parsing only for texts up to 4096 characters; the
    folded statements stay under that, so each shape is parsed once per process.
    """
    return " ".join(("WITH " + ", ".join(ctes) + " SELECT " + select).split())


def in_id_order(ids: Iterable[UUID]) -> list[UUID]:
    """``sorted(ids)`` with the comparisons in C: by ``UUID.int``, the same order as
    ``UUID.__lt__`` (a Python call per comparison, about 0.8 ms for 1000 ids) and as
    PostgreSQL's (16 unsigned bytes)."""
    return sorted(ids, key=_id_int)


def in_key_order(keys: Iterable[tuple[str, UUID]]) -> list[tuple[str, UUID]]:
    """``sorted(keys)`` for (principal, request_id) keys, as :func:`in_id_order` does it."""
    return sorted(keys, key=_key_ints)


_id_int = attrgetter("int")


def _key_ints(key: tuple[str, UUID]) -> tuple[str, int]:
    return key[0], key[1].int


ACCOUNT_COLUMNS = (
    "a.account_id, a.kind, a.currency, a.owner_user_id, a.partner_id, a.posted, "
    "a.pending_out, a.frozen, a.created_at"
)


def lock_wanted_accounts(after: str = "") -> str:
    """CTEs ``locked`` and ``system``: the accounts of the statement's ``wanted`` CTE.

    User accounts are locked in id order, like every other writer; system accounts are read
    without a lock (their changes go to balance_deltas). ``after`` names a CTE that must run
    to completion before the first lock is taken: with the CTE that claims the keys, a
    claimer never waits for a key while it holds account locks.
    """
    gate = f"AND (SELECT count(*) FROM {after}) >= 0" if after else ""
    return f"""
    locked AS (
        SELECT {ACCOUNT_COLUMNS}
        FROM accounts AS a
        WHERE a.account_id = ANY(ARRAY(SELECT account_id FROM wanted)) AND a.kind = 'user'
            {gate}
        ORDER BY a.account_id
        FOR UPDATE OF a
    ),
    system AS (
        SELECT {ACCOUNT_COLUMNS}
        FROM accounts AS a
        WHERE a.account_id = ANY(ARRAY(SELECT account_id FROM wanted)) AND a.kind <> 'user'
    )"""


# The rows tagged 'a' that report those accounts (columns 6 to 14 of a claim statement).
WANTED_ACCOUNT_ROWS = """
    UNION ALL
    SELECT 'a', NULL, NULL, NULL, NULL, l.account_id, l.kind, l.currency, l.owner_user_id,
        l.partner_id, l.posted, l.pending_out, l.frozen, l.created_at
    FROM locked AS l
    UNION ALL
    SELECT 'a', NULL, NULL, NULL, NULL, s.account_id, s.kind, s.currency, s.owner_user_id,
        s.partner_id, s.posted, s.pending_out, s.frozen, s.created_at
    FROM system AS s"""


def account_from_row(row: Sequence[Any]) -> Account:
    """An account from the columns of ``ACCOUNT_COLUMNS``, in order."""
    return Account(
        account_id=row[0],
        kind=AccountKind(row[1]),
        currency=row[2],
        owner_user_id=row[3],
        partner_id=row[4],
        posted=row[5],
        pending_out=row[6],
        frozen=row[7],
        created_at=row[8],
    )


# Posted transactions with their legs and balance changes: user accounts (locked by the
# caller) are updated; a system account's change is appended to balance_deltas. The legs are
# not joined to the inserted transactions: the postings trigger checks every leg's
# transaction and account once the statement is done (migration 0005), and the join (a sort
# and a merge) cost about 25 ms of a 1000-item batch.
RECORD_POSTED = """
    tx AS (
        INSERT INTO transactions (transaction_id, kind, status, currency, amount,
            from_account_id, to_account_id, memo, external_reference, initiator,
            created_at, posted_at, partner_id, status_message)
        SELECT t.transaction_id, t.kind, t.status, t.currency, t.amount, t.from_account_id,
            t.to_account_id, t.memo, t.external_reference, t.initiator, t.created_at,
            t.posted_at, t.partner_id, t.status_message
        FROM unnest(%(transaction_ids)b::uuid[], %(kinds)b::text[], %(statuses)b::text[],
            %(currencies)b::text[], %(amounts)b::bigint[], %(from_account_ids)b::uuid[],
            %(to_account_ids)b::uuid[], %(memos)b::text[], %(external_references)b::text[],
            %(initiators)b::text[], %(times)b::timestamptz[], %(posted_ats)b::timestamptz[],
            %(partner_ids)b::uuid[], %(status_messages)b::text[])
            WITH ORDINALITY AS t(transaction_id, kind, status, currency, amount,
                from_account_id, to_account_id, memo, external_reference, initiator,
                created_at, posted_at, partner_id, status_message, n)
        ORDER BY t.n
        RETURNING transaction_id
    ),
    legs AS (
        INSERT INTO postings (transaction_id, account_id, amount, currency, created_at)
        SELECT leg.transaction_id, leg.account_id, leg.amount, leg.currency, leg.created_at
        FROM unnest(%(leg_transactions)b::uuid[], %(leg_accounts)b::uuid[],
            %(leg_amounts)b::bigint[], %(leg_currencies)b::text[], %(leg_times)b::timestamptz[])
            WITH ORDINALITY AS leg(transaction_id, account_id, amount, currency, created_at, n)
        ORDER BY leg.n
    ),
    delta AS (
        SELECT d.account_id, d.posted, acc.kind
        FROM unnest(%(delta_accounts)b::uuid[], %(delta_posted)b::bigint[])
            AS d(account_id, posted)
        JOIN accounts AS acc ON acc.account_id = d.account_id
    ),
    balances AS (
        UPDATE accounts AS a SET posted = a.posted + delta.posted
        FROM delta
        WHERE a.account_id = delta.account_id AND delta.kind = 'user'
    ),
    deferred AS (
        INSERT INTO balance_deltas (account_id, amount)
        SELECT delta.account_id, delta.posted FROM delta
        WHERE delta.kind <> 'user' AND delta.posted <> 0
        ORDER BY delta.account_id
    )"""


def record_params(txs: Sequence[tuple[Transaction, str]]) -> dict[str, BinaryArray]:
    """Parameters of ``RECORD_POSTED`` for (transaction, initiator) pairs, in order."""
    deltas: dict[UUID, int] = {}
    legs = [(tx, leg) for tx, _ in txs for leg in tx.postings]
    for _, leg in legs:
        deltas[leg.account_id] = deltas.get(leg.account_id, 0) + leg.amount
    ordered = in_id_order(deltas)  # the order the locks were taken in
    return {
        "transaction_ids": uuid_array([tx.transaction_id for tx, _ in txs]),
        "kinds": text_array([tx.kind.value for tx, _ in txs]),
        "statuses": text_array([tx.status.value for tx, _ in txs]),
        "currencies": text_array([tx.amount.currency for tx, _ in txs]),
        "amounts": bigint_array([tx.amount.amount_minor for tx, _ in txs]),
        "from_account_ids": uuid_array([tx.from_account_id for tx, _ in txs]),
        "to_account_ids": uuid_array([tx.to_account_id for tx, _ in txs]),
        "memos": text_array([tx.memo for tx, _ in txs]),
        "external_references": text_array([tx.external_reference for tx, _ in txs]),
        "initiators": text_array([initiator for _, initiator in txs]),
        "times": timestamptz_array([tx.created_at for tx, _ in txs]),
        "posted_ats": timestamptz_array([tx.posted_at for tx, _ in txs]),
        "partner_ids": uuid_array([tx.partner_id for tx, _ in txs]),
        "status_messages": text_array([tx.status_message for tx, _ in txs]),
        "leg_transactions": uuid_array([tx.transaction_id for tx, _ in legs]),
        "leg_accounts": uuid_array([leg.account_id for _, leg in legs]),
        "leg_amounts": bigint_array([leg.amount for _, leg in legs]),
        "leg_currencies": text_array([leg.currency or tx.amount.currency for tx, leg in legs]),
        "leg_times": timestamptz_array([tx.posted_at or tx.created_at for tx, _ in legs]),
        "delta_accounts": uuid_array(ordered),
        "delta_posted": bigint_array([deltas[a] for a in ordered]),
    }


# Keys are found by (principal, request_id) pairs from the parameters, never by a constant
# principal: statistics taken while a caller had few keys can make the planner read every
# key the caller kept (a day's worth) for each statement.

# Remembered responses of keys claimed earlier in the transaction.
STORE_RESPONSES = """
    responses AS (
        UPDATE idempotency_keys AS k SET response = r.response
        FROM unnest(%(response_principals)b::text[], %(response_request_ids)b::uuid[],
            %(responses)b::text[]) AS r(principal, request_id, response)
        WHERE k.principal = r.principal AND k.request_id = r.request_id
    )"""


def response_params(responses: dict[tuple[str, UUID], str]) -> dict[str, BinaryArray]:
    """Parameters of ``STORE_RESPONSES`` for (principal, request_id) -> JSON text, in key
    order (the order concurrent claimers wait in)."""
    ordered = in_key_order(responses)
    return {
        "response_principals": text_array([p for p, _ in ordered]),
        "response_request_ids": uuid_array([r for _, r in ordered]),
        "responses": text_array([responses[k] for k in ordered]),
    }


# Outbox rows, in order, and one row of their ids among the unsequenced (the sequencer
# numbers them once this commits).
APPEND_EVENTS = """
    events AS (
        INSERT INTO outbox (type, partner_id, account_ids, payload)
        SELECT e.type, e.partner_id,
            CASE WHEN e.accounts = '' THEN '{}'::uuid[]
                ELSE string_to_array(e.accounts, ' ')::uuid[] END,
            e.payload
        FROM unnest(%(event_types)b::text[], %(event_partner_ids)b::uuid[],
            %(event_accounts)b::text[], %(event_payloads)b::text[])
            WITH ORDINALITY AS e(type, partner_id, accounts, payload, n)
        ORDER BY e.n
        RETURNING event_id
    ),
    unsequenced AS (
        INSERT INTO outbox_unsequenced (event_ids)
        SELECT array_agg(event_id) FROM events HAVING count(*) > 0
    )"""

# An outbox row: (type, partner_id, account_ids, payload as JSON text).
EventText = tuple[str, UUID | None, Sequence[UUID], str]


def event_params(events: Sequence[EventText]) -> dict[str, BinaryArray]:
    """Parameters of ``APPEND_EVENTS``. Account ids travel as one space-separated string per
    row (arrays of arrays must be rectangular in PostgreSQL; rows touch one or two)."""
    return {
        "event_types": text_array([t for t, _, _, _ in events]),
        "event_partner_ids": uuid_array([p for _, p, _, _ in events]),
        "event_accounts": text_array(
            [" ".join(map(id_text, accounts)) for _, _, accounts, _ in events]
        ),
        "event_payloads": text_array([payload for _, _, _, payload in events]),
    }
