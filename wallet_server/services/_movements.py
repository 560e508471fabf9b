"""Money movements: person-to-person transfers and partner top-ups."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from wallet_server.domain import (
    Account,
    AccountKind,
    EventType,
    NotFound,
    Transaction,
    TransactionKind,
    TransactionStatus,
    normalize_username,
    plan_transfer,
    transaction_event,
)
from wallet_server.services._accounts import account_not_found
from wallet_server.services._call import note_resources
from wallet_server.services._commands import Deposit, Transfer
from wallet_server.services._events import publish
from wallet_server.services._idempotency import run_once
from wallet_server.services._retry import retry_on_conflict
from wallet_server.services._unit_of_work import UnitOfWork


async def _resolve_destination(uow: UnitOfWork, cmd: Transfer) -> UUID:
    if cmd.to_account_id is not None:
        return cmd.to_account_id
    assert cmd.to_username is not None
    user_id = await uow.users.user_id_by_username(normalize_username(cmd.to_username))
    account_id = (
        None
        if user_id is None
        else await uow.ledger.user_account_in_currency(user_id, cmd.amount.currency)
    )
    if account_id is None:
        raise NotFound(f"no {cmd.amount.currency} account for user {cmd.to_username!r}")
    return account_id


async def _post(
    uow: UnitOfWork,
    *,
    kind: TransactionKind,
    source_id: UUID,
    destination_id: UUID,
    cmd: Transfer | Deposit,
    memo: str,
    external_reference: str,
    initiator: str,
    source_must_belong_to: UUID | None,
    partner_id: UUID | None = None,
) -> Transaction:
    """Lock both accounts (in id order), let the domain decide, write the result."""
    locked = await uow.ledger.lock_accounts((source_id, destination_id))
    source = locked.get(source_id)
    destination = locked.get(destination_id)
    if source is None or (
        source_must_belong_to is not None and source.owner_user_id != source_must_belong_to
    ):
        raise account_not_found(source_id)
    tx = decide_movement(
        source,
        destination_id,
        destination,
        cmd,
        transaction_id=uow.new_id(),
        now=uow.now(),
        kind=kind,
        memo=memo,
        external_reference=external_reference,
        partner_id=partner_id,
    )
    changed = await uow.ledger.record(tx, initiator=initiator)
    publish(uow, transaction_event(EventType.TRANSACTION_CREATED, tx, changed))
    return tx


def decide_movement(
    source: Account,
    destination_id: UUID,
    destination: Account | None,
    cmd: Transfer | Deposit,
    *,
    transaction_id: UUID,
    now: datetime,
    kind: TransactionKind,
    memo: str,
    external_reference: str,
    partner_id: UUID | None,
) -> Transaction:
    """The posted transaction moving ``cmd.amount`` to a user account, or the refusal.

    One decision for the single and the grouped path, so their rules cannot drift apart."""
    if destination is None or destination.kind is not AccountKind.USER:
        raise account_not_found(destination_id)
    return Transaction(
        transaction_id=transaction_id,
        kind=kind,
        status=TransactionStatus.POSTED,
        amount=cmd.amount,
        from_account_id=source.account_id,
        to_account_id=destination_id,
        memo=memo,
        external_reference=external_reference,
        created_at=now,
        posted_at=now,
        postings=plan_transfer(source, destination, cmd.amount),
        partner_id=partner_id,
    )


@retry_on_conflict
async def transfer(cmd: Transfer, uow: UnitOfWork) -> Transaction:
    """Move money from the caller's account to another user's account."""
    async with uow:

        async def execute() -> Transaction:
            destination_id = await _resolve_destination(uow, cmd)
            return await _post(
                uow,
                kind=TransactionKind.TRANSFER,
                source_id=cmd.from_account_id,
                destination_id=destination_id,
                cmd=cmd,
                memo=cmd.memo,
                external_reference="",
                initiator=cmd.caller.key,
                source_must_belong_to=cmd.caller.user_id,
            )

        note_resources(cmd.from_account_id, cmd.to_account_id)
        tx = await run_once(
            uow,
            principal=cmd.caller.key,
            request_id=cmd.request_id,
            method="Transfer",
            command=cmd,
            result_type=Transaction,
            execute=execute,
        )
        note_resources(tx.to_account_id, tx.transaction_id)
        await uow.commit()
        return tx


@retry_on_conflict
async def deposit(cmd: Deposit, uow: UnitOfWork) -> Transaction:
    """Top-up: credit a user's account from the partner's settlement account."""
    async with uow:

        async def execute() -> Transaction:
            settlement_id = await uow.ledger.ensure_system_account(
                account_id=uow.new_id(),
                kind=AccountKind.SETTLEMENT,
                currency=cmd.amount.currency,
                partner_id=cmd.caller.partner_id,
            )
            return await _post(
                uow,
                kind=TransactionKind.DEPOSIT,
                source_id=settlement_id,
                destination_id=cmd.account_id,
                cmd=cmd,
                memo="",
                external_reference=cmd.external_reference,
                initiator=cmd.caller.key,
                source_must_belong_to=None,
                partner_id=cmd.caller.partner_id,
            )

        note_resources(cmd.account_id)
        tx = await run_once(
            uow,
            principal=cmd.caller.key,
            request_id=cmd.request_id,
            method="Deposit",
            command=cmd,
            result_type=Transaction,
            execute=execute,
        )
        note_resources(tx.transaction_id)
        await uow.commit()
        return tx
