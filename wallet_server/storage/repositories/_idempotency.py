"""Idempotency records: one per (principal, request_id), committed with the effect."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from wallet_server.storage._tables import idempotency_keys


@dataclass(frozen=True, slots=True)
class StoredResponse:
    method: str
    fingerprint: bytes
    response: Any


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

    async def purge_older_than(self, cutoff: datetime) -> int:
        result = await self._conn.execute(
            delete(idempotency_keys).where(idempotency_keys.c.created_at < cutoff)
        )
        return int(result.rowcount)
