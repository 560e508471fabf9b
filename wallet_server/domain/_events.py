"""Events: what changed, written with the change, streamed to the users and partners concerned."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from wallet_server.domain._ledger import Account, AccountKind, Transaction
from wallet_server.domain._orders import Order


class EventType(StrEnum):
    TRANSACTION_CREATED = "transaction_created"
    TRANSACTION_STATUS_CHANGED = "transaction_status_changed"
    ACCOUNT_STATUS_CHANGED = "account_status_changed"
    ORDER_UPDATED = "order_updated"


@dataclass(frozen=True, slots=True)
class LedgerEvent:
    """One change. ``accounts`` are the user accounts it touched, as they are right after it
    (their owners' WatchAccount streams carry it); ``partner_id`` names the partner whose
    WatchEvents stream carries it."""

    type: EventType
    created_at: datetime
    transaction: Transaction | None = None
    order: Order | None = None
    accounts: tuple[Account, ...] = ()
    partner_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class SequencedEvent:
    sequence: int
    event: LedgerEvent


def transaction_event(
    type_: EventType,
    tx: Transaction,
    changed: dict[UUID, Account],
    *,
    order: Order | None = None,
) -> LedgerEvent:
    """The event of ``tx`` for the user accounts among ``changed`` and its partner, if any."""
    return LedgerEvent(
        type=type_,
        created_at=tx.posted_at or tx.created_at,
        transaction=tx,
        order=order,
        accounts=tuple(
            sorted(
                (a for a in changed.values() if a.kind is AccountKind.USER),
                key=lambda a: a.account_id,
            )
        ),
        partner_id=tx.partner_id,
    )
