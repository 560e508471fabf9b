"""The append-only audit log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from wallet_server.storage._arrays import text_array
from wallet_server.storage._driver import WritesAtCommit, driver_sql
from wallet_server.storage._tables import audit_log


@dataclass(frozen=True, slots=True)
class NewAuditEntry:
    call_id: UUID
    occurred_at: datetime
    principal: str
    method: str
    resource_ids: tuple[str, ...]
    code: str
    latency_us: int
    peer: str
    request_id: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    sequence: int
    occurred_at: datetime
    principal: str
    method: str
    resource_ids: tuple[str, ...]
    code: str
    latency_us: int
    peer: str
    request_id: str
    hash: bytes | None


# Every committing call writes one; a call whose commit already wrote its row keeps it.
_APPEND = """
    INSERT INTO audit_log (call_id, occurred_at, principal, method, resource_ids, code,
        latency_us, peer, request_id)
    VALUES (:call_id, :occurred_at, :principal, :method, :resource_ids, :code, :latency_us,
        :peer, :request_id)
    ON CONFLICT (call_id) DO NOTHING
"""


class AuditRepository:
    """``append`` goes out with the commit (``at_commit``: every committing call makes one),
    on the psycopg connection beneath ``conn``, in the same transaction."""

    def __init__(self, conn: AsyncConnection, at_commit: WritesAtCommit) -> None:
        self._conn = conn
        self._at_commit = at_commit

    def append(self, entries: Sequence[NewAuditEntry]) -> None:
        """Add rows with the commit; a call that already has its row (its commit went
        through) keeps it."""
        for e in entries:
            self._at_commit.add(
                driver_sql(_APPEND),
                {
                    "call_id": e.call_id,
                    "occurred_at": e.occurred_at,
                    "principal": e.principal,
                    "method": e.method,
                    "resource_ids": text_array(e.resource_ids),  # a batch names thousands
                    "code": e.code,
                    "latency_us": e.latency_us,
                    "peer": e.peer,
                    "request_id": e.request_id,
                },
            )

    async def page(self, *, before_seq: int | None, limit: int) -> list[AuditEntry]:
        """Newest first."""
        stmt = select(audit_log)
        if before_seq is not None:
            stmt = stmt.where(audit_log.c.seq < before_seq)
        stmt = stmt.order_by(audit_log.c.seq.desc()).limit(limit)
        return [
            AuditEntry(
                sequence=row.seq,
                occurred_at=row.occurred_at,
                principal=row.principal,
                method=row.method,
                resource_ids=tuple(row.resource_ids),
                code=row.code,
                latency_us=row.latency_us,
                peer=row.peer,
                request_id=row.request_id,
                hash=None if row.hash is None else bytes(row.hash),
            )
            for row in await self._conn.execute(stmt)
        ]
