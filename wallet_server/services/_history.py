"""Reading the ledger: one transaction, an account's history, the audit log."""

from __future__ import annotations

from wallet_server.domain import NotFound, Transaction
from wallet_server.services._accounts import load_own_account
from wallet_server.services._call import note_resources
from wallet_server.services._commands import GetAuditLog, GetTransaction, ListTransactions
from wallet_server.services._results import AuditPage, TransactionPage
from wallet_server.services._retry import retry_on_conflict
from wallet_server.services._unit_of_work import UnitOfWork


@retry_on_conflict
async def get_transaction(cmd: GetTransaction, uow: UnitOfWork) -> Transaction:
    """A transaction is visible to the owners of the accounts it touches, and no one else."""
    async with uow:
        note_resources(cmd.transaction_id)
        tx = await uow.ledger.get_transaction(cmd.transaction_id)
        if tx is None:
            raise NotFound(f"transaction {cmd.transaction_id} not found")
        touched = {tx.from_account_id, tx.to_account_id} - {None}
        owners = set()
        for account_id in touched:
            account = await uow.ledger.get_account(account_id)  # type: ignore[arg-type]
            if account is not None:
                owners.add(account.owner_user_id)
        if cmd.caller.user_id not in owners:
            raise NotFound(f"transaction {cmd.transaction_id} not found")
        await uow.commit()
        return tx


@retry_on_conflict
async def list_transactions(cmd: ListTransactions, uow: UnitOfWork) -> TransactionPage:
    async with uow:
        note_resources(cmd.account_id)
        await load_own_account(uow, cmd.caller, cmd.account_id)
        page = await uow.ledger.list_account_transactions(
            cmd.account_id,
            before_seq=cmd.before_seq,
            limit=cmd.page_size,
            start_time=cmd.start_time,
            end_time=cmd.end_time,
            kinds=cmd.kinds,
        )
        await uow.commit()
        return TransactionPage(page.transactions, page.next_before_seq)


@retry_on_conflict
async def get_audit_log(cmd: GetAuditLog, uow: UnitOfWork) -> AuditPage:
    async with uow:
        entries = await uow.audit.page(before_seq=cmd.before_seq, limit=cmd.page_size + 1)
        page = tuple(entries[: cmd.page_size])
        more = len(entries) > cmd.page_size
        await uow.commit()
        return AuditPage(page, page[-1].sequence if more and page else None)
