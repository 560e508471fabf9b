"""Set-based reads and writes for a partner's batch of transfers (CreateTransfers).

Works on the raw psycopg connection with binary parameters, like the movement groups: one
statement claims the items' idempotency keys and locks the accounts of the items it claimed,
one writes the posted transactions with their legs and balance changes, and one the
remembered responses and the events. Responses and event payloads arrive as JSON text,
which the caller can serialize while the database writes the transactions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from wallet_server.domain import Account, Transaction
from wallet_server.storage.repositories._bulk import (
    APPEND_EVENTS,
    LOCK_WANTED_ACCOUNTS,
    READ_KEYS,
    RECORD_POSTED,
    STORE_RESPONSES,
    WANTED_ACCOUNT_ROWS,
    EventText,
    account_from_row,
    event_params,
    record_params,
    response_params,
    with_statement,
)
from wallet_server.storage.repositories._idempotency import StoredResponse

# In one statement:
#  - claim every item's key (inserted in request_id order, so concurrent claimers wait on
#    each other's keys in one order) and report the stored record of every key already
#    taken (read from the snapshot before the insert, so never a key claimed here);
#  - lock the user accounts of the items whose key was claimed, in id order like every other
#    writer, and read their system accounts without a lock (their changes go to
#    balance_deltas). The locks depend on ``claimed``, so every key is claimed before the
#    first account lock is taken.
# Rows are tagged: 'c' claimed, 's' stored, 'a' account.
# Stored keys are found by joining on the input's principal column (``input`` is used more
# than once, so it is materialized and the planner does not see the constant in it), not on
# the principal as a constant: statistics taken while the partner had few keys estimate a
# handful of rows for it, and the planner then read every key the partner kept (a day's
# worth), per batch. (The key array as an extra condition of that lookup was no better:
# inside a nested loop it is sorted again for every key, a million comparisons for 1000.)
_CLAIM_AND_LOCK = f"""
    WITH input AS (
        SELECT %(principal)b::text AS principal, k.request_id, k.fingerprint,
            k.from_account_id, k.to_account_id
        FROM unnest(%(request_ids)b::uuid[], %(fingerprints)b::bytea[],
            %(from_account_ids)b::uuid[], %(to_account_ids)b::uuid[])
            AS k(request_id, fingerprint, from_account_id, to_account_id)
    ),
    claimed AS (
        INSERT INTO idempotency_keys (principal, request_id, method, fingerprint)
        SELECT input.principal, input.request_id, %(method)b::text, input.fingerprint
        FROM input ORDER BY input.request_id
        ON CONFLICT DO NOTHING
        RETURNING request_id
    ),
    wanted AS (
        SELECT input.from_account_id AS account_id
        FROM input JOIN claimed ON claimed.request_id = input.request_id
        UNION
        SELECT input.to_account_id
        FROM input JOIN claimed ON claimed.request_id = input.request_id
    ),
    {LOCK_WANTED_ACCOUNTS}
    SELECT 'c', c.request_id, NULL::text, NULL::bytea, NULL::json,
        NULL::uuid, NULL::text, NULL::text, NULL::uuid, NULL::uuid, NULL::bigint,
        NULL::bigint, NULL::boolean, NULL::timestamptz
    FROM claimed AS c
    UNION ALL
    SELECT 's', k.request_id, k.method, k.fingerprint, k.response,
        NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
    FROM idempotency_keys AS k
    JOIN input ON input.principal = k.principal AND input.request_id = k.request_id
    {WANTED_ACCOUNT_ROWS}
"""


@dataclass(frozen=True, slots=True)
class BatchReads:
    """Earlier outcomes of the keys already taken (every other key is now claimed), and the
    accounts of the claimed items: user accounts locked, system accounts read."""

    stored: dict[UUID, StoredResponse]
    accounts: dict[UUID, Account]


@dataclass(slots=True)
class BatchWrites:
    """The documents a decided batch writes besides its transactions: responses keyed by
    request_id (the initiator's keys) and events in decision order, as JSON text."""

    initiator: str
    responses: dict[UUID, str] = field(default_factory=dict)
    events: list[EventText] = field(default_factory=list)


class BatchRepository:
    """Reads and writes of a batch; ``conn`` is the unit of work's psycopg connection, inside
    its transaction."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def claim_and_lock(
        self,
        *,
        principal: str,
        method: str,
        keys: dict[UUID, tuple[bytes, UUID | None, UUID | None]],
    ) -> BatchReads:
        """Claim ``keys`` (request_id -> fingerprint, source, destination) and lock the
        accounts of the items claimed, in one statement in the usual case.

        Keys a concurrent transaction committed while this one waited are read by a second
        statement; a key purged in between is claimed afresh by another round.
        """
        stored: dict[UUID, StoredResponse] = {}
        accounts: dict[UUID, Account] = {}
        pending = dict(keys)
        for _ in range(3):
            ordered = sorted(pending)
            cur = await self._conn.execute(
                _CLAIM_AND_LOCK,
                {
                    "principal": principal,
                    "method": method,
                    "request_ids": ordered,
                    "fingerprints": [pending[k][0] for k in ordered],
                    "from_account_ids": [pending[k][1] for k in ordered],
                    "to_account_ids": [pending[k][2] for k in ordered],
                },
            )
            claimed: list[UUID] = []
            for row in await cur.fetchall():
                tag = row[0]
                if tag == "a":
                    accounts[row[5]] = account_from_row(row[5:])
                elif tag == "c":
                    claimed.append(row[1])
                    pending.pop(row[1], None)
                else:
                    pending.pop(row[1], None)
                    stored[row[1]] = StoredResponse(row[2], bytes(row[3]), row[4])
            # A key purged while the claim waited on it is claimed afresh, though the
            # statement's snapshot still shows the old record: the claim is what counts.
            for request_id in claimed:
                stored.pop(request_id, None)
            if not pending:
                return BatchReads(stored=stored, accounts=accounts)
            cur = await self._conn.execute(
                READ_KEYS,
                {"principals": [principal] * len(pending), "request_ids": list(pending)},
            )
            for _, request_id, key_method, fingerprint, response in await cur.fetchall():
                pending.pop(request_id, None)
                stored[request_id] = StoredResponse(key_method, bytes(fingerprint), response)
            if not pending:
                return BatchReads(stored=stored, accounts=accounts)
            # Anything left was purged in between: claim it afresh.
        raise RuntimeError("idempotency keys neither insertable nor readable")

    async def record(self, *, initiator: str, transactions: Sequence[Transaction]) -> None:
        """Write posted transactions with their legs and balance changes, in one statement."""
        if transactions:
            await self._conn.execute(
                with_statement(RECORD_POSTED),
                record_params([(tx, initiator) for tx in transactions]),
            )

    async def write(self, writes: BatchWrites) -> None:
        """Store the responses and append the events, in one statement (the caller then
        commits)."""
        parts: list[str] = []
        params: dict[str, Any] = {}
        if writes.responses:
            parts.append(STORE_RESPONSES)
            params.update(
                response_params({(writes.initiator, k): v for k, v in writes.responses.items()})
            )
        if writes.events:
            parts.append(APPEND_EVENTS)
            params.update(event_params(writes.events))
        if parts:
            # Data-modifying CTEs all run to completion, referenced or not.
            await self._conn.execute(with_statement(*parts), params)
