"""The append-only audit log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

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


class AuditRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def append(self, entries: Sequence[NewAuditEntry]) -> None:
        """Add rows; a call that already has its row (its commit went through) keeps it."""
        if not entries:
            return
        await self._conn.execute(
            pg_insert(audit_log).on_conflict_do_nothing(index_elements=[audit_log.c.call_id]),
            [
                {
                    "call_id": e.call_id,
                    "occurred_at": e.occurred_at,
                    "principal": e.principal,
                    "method": e.method,
                    "resource_ids": list(e.resource_ids),
                    "code": e.code,
                    "latency_us": e.latency_us,
                    "peer": e.peer,
                    "request_id": e.request_id,
                }
                for e in entries
            ],
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
