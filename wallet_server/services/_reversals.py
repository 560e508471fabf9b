"""Use cases: reversals (an operator corrects a posted transaction)."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from wallet_server.domain import (
    EventType,
    NotFound,
    OperatorPrincipal,
    Transaction,
    TransactionKind,
    TransactionStatus,
    check_reversible,
    plan_reversal,
    transaction_event,
)
from wallet_server.services._call import note_resources
from wallet_server.services._events import publish
from wallet_server.services._idempotency import run_once
from wallet_server.services._retry import retry_on_conflict
from wallet_server.services._unit_of_work import UnitOfWork


@dataclass(frozen=True, slots=True)
class ReverseTransaction:
    caller: OperatorPrincipal
    request_id: UUID
    transaction_id: UUID
    reason: str  # becomes the reversal's memo


@retry_on_conflict
async def reverse_transaction(cmd: ReverseTransaction, uow: UnitOfWork) -> Transaction:
    """Post the exact opposite of a POSTED transaction, linked to it; at most once each."""
    async with uow:

        async def execute() -> Transaction:
            # The original's row lock serializes concurrent reversals of it: the second one
            # waits here, then sees the first one's REVERSAL.
            original = await uow.ledger.lock_transaction(cmd.transaction_id)
            if original is None:
                raise NotFound(f"transaction {cmd.transaction_id} not found")
            reversed_by = original.reversed_by_transaction_id
            check_reversible(original, reversed_by=reversed_by)
            locked = await uow.ledger.lock_accounts({p.account_id for p in original.postings})
            legs = plan_reversal(original, locked, reversed_by=reversed_by)
            now = uow.now()
            # Money flows back: the original's destination is the reversal's source. For an
            # exchange, what leaves is the original's to_amount and what arrives its amount.
            tx = Transaction(
                transaction_id=uow.new_id(),
                kind=TransactionKind.REVERSAL,
                status=TransactionStatus.POSTED,
                amount=original.to_amount or original.amount,
                from_account_id=original.to_account_id,
                to_account_id=original.from_account_id,
                memo=cmd.reason,
                external_reference="",
                created_at=now,
                posted_at=now,
                postings=legs,
                reverses_transaction_id=original.transaction_id,
                partner_id=original.partner_id,
                to_amount=None if original.to_amount is None else original.amount,
            )
            changed = await uow.ledger.record(tx, initiator=cmd.caller.key)
            publish(uow, transaction_event(EventType.TRANSACTION_CREATED, tx, changed))
            return tx

        note_resources(cmd.transaction_id)
        tx = await run_once(
            uow,
            principal=cmd.caller.key,
            request_id=cmd.request_id,
            method="ReverseTransaction",
            command=cmd,
            result_type=Transaction,
            execute=execute,
        )
        note_resources(tx.transaction_id)
        await uow.commit()
        return tx


__all__ = ["ReverseTransaction", "reverse_transaction"]
