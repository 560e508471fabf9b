"""Publishing events: each change writes its event in its own transaction (the outbox)."""

from __future__ import annotations

from typing import Any

from wallet_server.domain import LedgerEvent
from wallet_server.services._codec import fields_of, to_json
from wallet_server.services._unit_of_work import UnitOfWork
from wallet_server.storage.repositories import EventRow


def event_row(event: LedgerEvent, *, transaction: Any = None) -> EventRow:
    """The outbox row of ``event``: routed by its accounts and partner; the payload is the
    event as JSON text. ``transaction`` is the event's transaction already serialized
    (:func:`embedded`), when the caller has it."""
    return (
        event.type.value,
        event.partner_id,
        [a.account_id for a in event.accounts],
        to_json(event if transaction is None else fields_of(event, transaction=transaction)),
    )


def publish(uow: UnitOfWork, *events: LedgerEvent) -> None:
    """Append events to the outbox inside the unit of work: they go out with its commit."""
    uow.events.append([event_row(e) for e in events])
