"""Use cases: withdrawals (提现).

A user requests a payout to a bank account: the amount is held (PENDING) and the withdrawal
is routed to the payout partner. That partner completes it (POSTED: user account → the
partner's settlement account) or fails it (VOIDED: the hold is released). The destination is
stored sealed (AES-GCM, bound to the transaction id) and opened only for the routed partner.

Locks: the transaction row first (completion and failure), then the accounts in id order, so a
concurrent complete and fail of one withdrawal serialise and exactly one of them wins.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection
from dataclasses import dataclass
from uuid import UUID

from wallet_server.domain import (
    AccountKind,
    EventType,
    FailedPrecondition,
    Money,
    NotFound,
    PartnerPrincipal,
    PayoutDestination,
    Transaction,
    UserPrincipal,
    ensure_withdrawal_pending,
    new_withdrawal,
    plan_withdrawal_completion,
    plan_withdrawal_failure,
    plan_withdrawal_hold,
    transaction_event,
    withdrawal_routed_to,
)
from wallet_server.security import SecretBox
from wallet_server.services._accounts import account_not_found
from wallet_server.services._call import note_resources
from wallet_server.services._events import publish
from wallet_server.services._idempotency import run_once
from wallet_server.services._retry import retry_on_conflict
from wallet_server.services._unit_of_work import UnitOfWork

# --- commands -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestWithdrawal:
    caller: UserPrincipal
    request_id: UUID
    account_id: UUID
    amount: Money
    destination: PayoutDestination


@dataclass(frozen=True, slots=True)
class CompleteWithdrawal:
    caller: PartnerPrincipal
    request_id: UUID
    transaction_id: UUID
    external_reference: str


@dataclass(frozen=True, slots=True)
class FailWithdrawal:
    caller: PartnerPrincipal
    request_id: UUID
    transaction_id: UUID
    failure_message: str


@dataclass(frozen=True, slots=True)
class _WithdrawalFingerprint:
    """What identifies a withdrawal request for idempotency. The destination enters only as a
    keyed digest: the stored fingerprint must not let anyone guess a bank account number."""

    account_id: UUID
    amount: Money
    destination: str


def _canonical_destination(destination: PayoutDestination) -> bytes:
    return "\n".join(
        (
            destination.holder_name,
            destination.country_code,
            destination.bank_code,
            destination.account_number,
        )
    ).encode()


# --- sealing the destination ----------------------------------------------------------------

_DESTINATION_FORMAT = 1


def _associated_data(transaction_id: UUID) -> bytes:
    # Binds the blob to its withdrawal: copied onto another row it no longer opens.
    return transaction_id.bytes


def seal_destination(
    secrets: SecretBox, transaction_id: UUID, destination: PayoutDestination
) -> bytes:
    """The destination of withdrawal ``transaction_id``, encrypted under the active key."""
    plaintext = json.dumps(
        {"v": _DESTINATION_FORMAT, **dataclasses.asdict(destination)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    return secrets.seal(plaintext, associated_data=_associated_data(transaction_id))


def open_destination(secrets: SecretBox, transaction_id: UUID, sealed: bytes) -> PayoutDestination:
    """The plaintext of ``seal_destination``; ``SecretBoxError`` if tampered or moved."""
    data = json.loads(secrets.open(sealed, associated_data=_associated_data(transaction_id)))
    if data.pop("v") != _DESTINATION_FORMAT:
        raise ValueError("unknown payout destination format")
    return PayoutDestination(**data)


async def payout_destinations(
    uow: UnitOfWork, secrets: SecretBox, partner_id: UUID, transaction_ids: Collection[UUID]
) -> dict[UUID, PayoutDestination]:
    """Decrypted destinations of those withdrawals among ``transaction_ids`` that are routed to
    ``partner_id`` (others are simply absent). Runs inside the caller's ``async with uow``."""
    sealed = await uow.withdrawals.sealed_destinations(partner_id, transaction_ids)
    return {tx_id: open_destination(secrets, tx_id, blob) for tx_id, blob in sealed.items()}


async def payout_destination(
    uow: UnitOfWork, secrets: SecretBox, transaction_id: UUID, partner_id: UUID
) -> PayoutDestination | None:
    """Where withdrawal ``transaction_id`` pays out, for its payout partner ``partner_id``;
    None when it is not a withdrawal routed to that partner. Inside ``async with uow``."""
    found = await payout_destinations(uow, secrets, partner_id, (transaction_id,))
    return found.get(transaction_id)


# --- use cases ------------------------------------------------------------------------------


def _no_such_withdrawal(transaction_id: UUID) -> NotFound:
    # Missing, not a withdrawal, or routed to another partner: the same answer.
    return NotFound(f"withdrawal {transaction_id} not found")


@retry_on_conflict
async def request_withdrawal(
    cmd: RequestWithdrawal, uow: UnitOfWork, secrets: SecretBox
) -> Transaction:
    """Hold ``amount`` on the caller's account for a payout to ``destination`` (PENDING)."""
    async with uow:

        async def execute() -> Transaction:
            locked = await uow.ledger.lock_accounts((cmd.account_id,))
            account = locked.get(cmd.account_id)
            if (
                account is None
                or account.kind is not AccountKind.USER
                or account.owner_user_id != cmd.caller.user_id
            ):
                raise account_not_found(cmd.account_id)
            holds = plan_withdrawal_hold(account, cmd.amount)
            partner_id = await uow.withdrawals.payout_partner()
            if partner_id is None:
                raise FailedPrecondition("no payout partner is registered")
            settlement_id = await uow.ledger.ensure_system_account(
                account_id=uow.new_id(),
                kind=AccountKind.SETTLEMENT,
                currency=cmd.amount.currency,
                partner_id=partner_id,
            )
            tx = new_withdrawal(
                transaction_id=uow.new_id(),
                account=account,
                settlement_account_id=settlement_id,
                partner_id=partner_id,
                amount=cmd.amount,
                now=uow.now(),
            )
            changed = await uow.ledger.record(tx, initiator=cmd.caller.key, holds=holds)
            await uow.withdrawals.add(
                transaction_id=tx.transaction_id,
                partner_id=partner_id,
                sealed_destination=seal_destination(secrets, tx.transaction_id, cmd.destination),
                created_at=tx.created_at,
            )
            publish(uow, transaction_event(EventType.TRANSACTION_CREATED, tx, changed))
            return tx

        note_resources(cmd.account_id)
        tx = await run_once(
            uow,
            principal=cmd.caller.key,
            request_id=cmd.request_id,
            method="RequestWithdrawal",
            command=_WithdrawalFingerprint(
                account_id=cmd.account_id,
                amount=cmd.amount,
                destination=secrets.digest(_canonical_destination(cmd.destination)).hex(),
            ),
            result_type=Transaction,
            execute=execute,
        )
        note_resources(tx.transaction_id)
        await uow.commit()
        return tx


async def _lock_pending_withdrawal(
    uow: UnitOfWork, transaction_id: UUID, caller: PartnerPrincipal
) -> tuple[Transaction, UUID]:
    """The caller's PENDING withdrawal (row locked) and its source account; refused before
    any account is locked."""
    tx = await uow.ledger.lock_transaction(transaction_id)
    if tx is None or not withdrawal_routed_to(tx, caller.partner_id):
        raise _no_such_withdrawal(transaction_id)
    ensure_withdrawal_pending(tx)
    assert tx.from_account_id is not None
    note_resources(tx.from_account_id)
    return tx, tx.from_account_id


@retry_on_conflict
async def complete_withdrawal(cmd: CompleteWithdrawal, uow: UnitOfWork) -> Transaction:
    """The payout partner paid the bank: post the held amount to its settlement account."""
    async with uow:

        async def execute() -> Transaction:
            tx, source_id = await _lock_pending_withdrawal(uow, cmd.transaction_id, cmd.caller)
            assert tx.to_account_id is not None
            locked = await uow.ledger.lock_accounts((source_id, tx.to_account_id))
            plan = plan_withdrawal_completion(
                tx,
                source=locked[source_id],
                settlement=locked[tx.to_account_id],
                external_reference=cmd.external_reference,
                now=uow.now(),
            )
            changed = await uow.ledger.settle(plan.transaction, legs=plan.legs, holds=plan.holds)
            publish(
                uow,
                transaction_event(EventType.TRANSACTION_STATUS_CHANGED, plan.transaction, changed),
            )
            return plan.transaction

        note_resources(cmd.transaction_id)
        tx = await run_once(
            uow,
            principal=cmd.caller.key,
            request_id=cmd.request_id,
            method="CompleteWithdrawal",
            command=cmd,
            result_type=Transaction,
            execute=execute,
        )
        await uow.commit()
        return tx


@retry_on_conflict
async def fail_withdrawal(cmd: FailWithdrawal, uow: UnitOfWork) -> Transaction:
    """The payout partner could not pay: void the withdrawal and release its hold."""
    async with uow:

        async def execute() -> Transaction:
            tx, source_id = await _lock_pending_withdrawal(uow, cmd.transaction_id, cmd.caller)
            locked = await uow.ledger.lock_accounts((source_id,))
            plan = plan_withdrawal_failure(
                tx, source=locked[source_id], failure_message=cmd.failure_message
            )
            changed = await uow.ledger.settle(plan.transaction, legs=plan.legs, holds=plan.holds)
            event = transaction_event(
                EventType.TRANSACTION_STATUS_CHANGED, plan.transaction, changed
            )
            # A voided transaction has no post time: the event happened now, not at creation.
            publish(uow, dataclasses.replace(event, created_at=uow.now()))
            return plan.transaction

        note_resources(cmd.transaction_id)
        tx = await run_once(
            uow,
            principal=cmd.caller.key,
            request_id=cmd.request_id,
            method="FailWithdrawal",
            command=cmd,
            result_type=Transaction,
            execute=execute,
        )
        await uow.commit()
        return tx


__all__ = [
    "CompleteWithdrawal",
    "FailWithdrawal",
    "RequestWithdrawal",
    "complete_withdrawal",
    "fail_withdrawal",
    "open_destination",
    "payout_destination",
    "payout_destinations",
    "request_withdrawal",
    "seal_destination",
]
