"""Idempotency records: one per (principal, request_id), committed with the effect."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from wallet_server.storage._tables import idempotency_keys


@dataclass(frozen=True, slots=True)
class StoredResponse:
    method: str
    fingerprint: bytes
    response: Any


# Claim every new key; report the stored record of every key already taken (the SELECT sees
# the snapshot from before the INSERT, so it never reports a key claimed here).
_CLAIM_MANY = text(
    """
    WITH input AS (
        SELECT k.request_id, k.fingerprint
        FROM unnest(CAST(:request_ids AS uuid[]), CAST(:fingerprints AS bytea[]))
            AS k(request_id, fingerprint)
    ),
    claimed AS (
        INSERT INTO idempotency_keys (principal, request_id, method, fingerprint)
        SELECT :principal, input.request_id, :method, input.fingerprint
        FROM input ORDER BY input.request_id
        ON CONFLICT DO NOTHING
        RETURNING request_id
    )
    SELECT claimed.request_id, true AS claimed, NULL AS method, NULL AS fingerprint,
        NULL AS response
    FROM claimed
    UNION ALL
    SELECT k.request_id, false, k.method, k.fingerprint, k.response
    FROM idempotency_keys AS k JOIN input ON input.request_id = k.request_id
    WHERE k.principal = :principal
    """
)

_STORE_MANY = text(
    """
    UPDATE idempotency_keys AS k SET response = r.response
    FROM unnest(CAST(:request_ids AS uuid[]), CAST(CAST(:responses AS text[]) AS jsonb[]))
        AS r(request_id, response)
    WHERE k.principal = :principal AND k.request_id = r.request_id
    """
)


class IdempotencyRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def claim(
        self, *, principal: str, request_id: UUID, method: str, fingerprint: bytes
    ) -> StoredResponse | None:
        """Claim the key for this transaction, or return what an earlier call stored.

        A concurrent call with the same key waits on the unique index until the first one
        commits (then sees its record) or rolls back (then claims the key itself).
        """
        for _ in range(3):
            inserted = await self._conn.execute(
                pg_insert(idempotency_keys)
                .values(
                    principal=principal,
                    request_id=request_id,
                    method=method,
                    fingerprint=fingerprint,
                )
                .on_conflict_do_nothing()
                .returning(idempotency_keys.c.request_id)
            )
            if inserted.first() is not None:
                return None
            row = (
                await self._conn.execute(
                    select(
                        idempotency_keys.c.method,
                        idempotency_keys.c.fingerprint,
                        idempotency_keys.c.response,
                    ).where(
                        idempotency_keys.c.principal == principal,
                        idempotency_keys.c.request_id == request_id,
                    )
                )
            ).first()
            if row is not None:
                return StoredResponse(row.method, bytes(row.fingerprint), row.response)
            # Purged between the two statements: claim it afresh.
        raise RuntimeError("idempotency key neither insertable nor readable")

    async def store_response(self, *, principal: str, request_id: UUID, response: Any) -> None:
        await self._conn.execute(
            update(idempotency_keys)
            .where(
                idempotency_keys.c.principal == principal,
                idempotency_keys.c.request_id == request_id,
            )
            .values(response=response)
        )

    async def claim_many(
        self, *, principal: str, method: str, keys: Mapping[UUID, bytes]
    ) -> dict[UUID, StoredResponse]:
        """Claim many keys (request_id -> fingerprint) at once, like :meth:`claim`.

        Returns what earlier calls stored for the keys that were already taken; every other
        key is now claimed by this transaction. One statement in the usual case; keys that a
        concurrent transaction committed while this one waited are read by a second one.
        """
        found: dict[UUID, StoredResponse] = {}
        pending = dict(keys)
        for _ in range(3):
            if not pending:
                return found
            ordered = sorted(pending)  # concurrent claimers wait on keys in the same order
            rows = await self._conn.execute(
                _CLAIM_MANY,
                {
                    "principal": principal,
                    "method": method,
                    "request_ids": ordered,
                    "fingerprints": [pending[k] for k in ordered],
                },
            )
            claimed = []
            for row in rows:
                pending.pop(row.request_id, None)
                if row.claimed:
                    claimed.append(row.request_id)
                else:
                    found[row.request_id] = StoredResponse(
                        row.method, bytes(row.fingerprint), row.response
                    )
            # Purged while the claim waited on it: claimed afresh, though the snapshot still
            # shows the old record.
            for request_id in claimed:
                found.pop(request_id, None)
            if not pending:
                return found
            # Committed by a concurrent transaction after this statement's snapshot.
            late = await self._conn.execute(
                select(
                    idempotency_keys.c.request_id,
                    idempotency_keys.c.method,
                    idempotency_keys.c.fingerprint,
                    idempotency_keys.c.response,
                ).where(
                    idempotency_keys.c.principal == principal,
                    idempotency_keys.c.request_id.in_(list(pending)),
                )
            )
            for row in late:
                pending.pop(row.request_id, None)
                found[row.request_id] = StoredResponse(
                    row.method, bytes(row.fingerprint), row.response
                )
            # Anything left was purged in between: claim it afresh.
        raise RuntimeError("idempotency keys neither insertable nor readable")

    async def store_responses(self, *, principal: str, responses: Mapping[UUID, Any]) -> None:
        """:meth:`store_response` for many claimed keys, in one statement."""
        if not responses:
            return
        ordered = sorted(responses)
        await self._conn.execute(
            _STORE_MANY,
            {
                "principal": principal,
                "request_ids": ordered,
                "responses": [json.dumps(responses[k]) for k in ordered],
            },
        )

    async def purge_older_than(self, cutoff: datetime) -> int:
        result = await self._conn.execute(
            delete(idempotency_keys).where(idempotency_keys.c.created_at < cutoff)
        )
        return int(result.rowcount)
