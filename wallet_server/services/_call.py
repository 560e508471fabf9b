"""What the current RPC is, for the audit trail.

Transport opens a :class:`CallRecord` per call; use cases add the resource ids they touch;
the unit of work writes the audit row in the same transaction as the call's effect, so a
money movement and its audit row commit together or not at all. Calls whose effect never
committed (errors, refused credentials) are audited afterwards by transport.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID, uuid4

from wallet_server.storage.repositories import NewAuditEntry

_current: ContextVar[CallRecord | None] = ContextVar("wallet_call", default=None)


@dataclass(slots=True)
class CallRecord:
    method: str
    peer: str
    started_at: datetime
    call_id: UUID = field(default_factory=uuid4)
    started_monotonic: float = field(default_factory=time.perf_counter)
    principal: str = "anonymous"
    request_id: str = ""
    resource_ids: list[str] = field(default_factory=list)
    audited: bool = False

    def entry(self, code: str, *, more_resources: Sequence[str] = ()) -> NewAuditEntry:
        latency_us = int((time.perf_counter() - self.started_monotonic) * 1_000_000)
        return NewAuditEntry(
            call_id=self.call_id,
            occurred_at=self.started_at,
            principal=self.principal,
            method=self.method,
            resource_ids=tuple(dict.fromkeys([*self.resource_ids, *more_resources])),
            code=code,
            latency_us=latency_us,
            peer=self.peer,
            request_id=self.request_id,
        )


def begin_call(record: CallRecord) -> None:
    _current.set(record)


def current_call() -> CallRecord | None:
    return _current.get()


def note_resources(*ids: object) -> None:
    """Name the objects this call touched (account, transaction ids) in its audit row."""
    record = _current.get()
    if record is not None:
        record.resource_ids.extend(str(i) for i in ids if i is not None)


def note_principal(key: str) -> None:
    """Name who the call turned out to be (sign-in calls start anonymous)."""
    record = _current.get()
    if record is not None:
        record.principal = key
