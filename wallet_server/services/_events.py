"""Publishing events: each change writes its event in its own transaction (the outbox)."""

from __future__ import annotations

from wallet_server.domain import LedgerEvent
from wallet_server.services._codec import encode
from wallet_server.services._unit_of_work import UnitOfWork


async def publish(uow: UnitOfWork, *events: LedgerEvent) -> None:
    """Append events to the outbox inside the unit of work: they commit with the change."""
    await uow.events.append(
        [
            (
                e.type.value,
                e.partner_id,
                [a.account_id for a in e.accounts],
                encode(e),
            )
            for e in events
        ]
    )
