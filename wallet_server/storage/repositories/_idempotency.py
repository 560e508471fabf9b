"""Idempotency records: one per (principal, request_id), committed with the effect."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from psycopg.abc import Buffer
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncConnection

from wallet_server.storage._driver import Driver, WritesAtCommit, driver_sql, fetch_rows
from wallet_server.storage._tables import idempotency_keys


@dataclass(frozen=True, slots=True)
class StoredResponse:
    method: str
    fingerprint: bytes
    response: Any  # the parsed document; None while the call that claimed the key runs


def stored_response(method: str, fingerprint: Buffer, response: str | None) -> StoredResponse:
    """A key's record from its columns; the response column holds JSON text."""
    return StoredResponse(
        method, bytes(fingerprint), None if response is None else orjson.loads(response)
    )


_CLAIM = """
    INSERT INTO idempotency_keys (principal, request_id, method, fingerprint)
    VALUES (:principal, :request_id, :method, :fingerprint)
    ON CONFLICT DO NOTHING
    RETURNING request_id
"""

_READ = """
    SELECT method, fingerprint, response FROM idempotency_keys
    WHERE principal = :principal AND request_id = :request_id
"""

_STORE = """
    UPDATE idempotency_keys SET response = :response
    WHERE principal = :principal AND request_id = :request_id
"""


class IdempotencyRepository:
    """Claims run on the driver connection (every mutating call makes one); ``driver`` is
    the psycopg connection beneath ``conn``, in the same transaction. Responses go out with
    the commit (``at_commit``)."""

    def __init__(self, conn: AsyncConnection, driver: Driver, at_commit: WritesAtCommit) -> None:
        self._conn = conn
        self._driver = driver
        self._at_commit = at_commit

    async def claim(
        self, *, principal: str, request_id: UUID, method: str, fingerprint: bytes
    ) -> StoredResponse | None:
        """Claim the key for this transaction, or return what an earlier call stored.

        A concurrent call with the same key waits on the unique index until the first one
        commits (then sees its record) or rolls back (then claims the key itself).
        """
        key = {"principal": principal, "request_id": request_id}
        for _ in range(3):
            inserted = await fetch_rows(
                self._driver, _CLAIM, {**key, "method": method, "fingerprint": fingerprint}
            )
            if inserted:
                return None
            found = await fetch_rows(self._driver, _READ, key)
            if found:
                row = found[0]
                return stored_response(row.method, row.fingerprint, row.response)
            # Purged between the two statements: claim it afresh.
        raise RuntimeError("idempotency key neither insertable nor readable")

    def store_response(self, *, principal: str, request_id: UUID, response: str) -> None:
        """Store ``response`` (JSON text) as the key's remembered outcome, with the commit."""
        self._at_commit.add(
            driver_sql(_STORE),
            {"principal": principal, "request_id": request_id, "response": response},
        )

    async def purge_older_than(self, cutoff: datetime) -> int:
        # One statement: keys stored in one transaction (one created_at) go together. A
        # batch's replay reads its items' keys by that (BatchRepository.stored_with_batch).
        result = await self._conn.execute(
            delete(idempotency_keys).where(idempotency_keys.c.created_at < cutoff)
        )
        return int(result.rowcount)
