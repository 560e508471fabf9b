"""A user's own accounts: open, read, list."""

from __future__ import annotations

from uuid import UUID

from wallet_server.domain import Account, AlreadyExists, NotFound, UserPrincipal
from wallet_server.services._call import note_resources
from wallet_server.services._commands import GetAccount, ListAccounts, OpenAccount
from wallet_server.services._idempotency import run_once
from wallet_server.services._results import AccountPage
from wallet_server.services._retry import retry_on_conflict
from wallet_server.services._unit_of_work import UnitOfWork


def account_not_found(account_id: UUID) -> NotFound:
    # The same answer whether the account does not exist or belongs to someone else.
    return NotFound(f"account {account_id} not found")


async def load_own_account(uow: UnitOfWork, caller: UserPrincipal, account_id: UUID) -> Account:
    account = await uow.ledger.get_account(account_id)
    if account is None or account.owner_user_id != caller.user_id:
        raise account_not_found(account_id)
    return account


@retry_on_conflict
async def open_account(cmd: OpenAccount, uow: UnitOfWork) -> Account:
    async with uow:

        async def execute() -> Account:
            account = await uow.ledger.add_user_account(
                account_id=uow.new_id(),
                owner_user_id=cmd.caller.user_id,
                currency=cmd.currency,
                now=uow.now(),
            )
            if account is None:
                raise AlreadyExists(f"you already have a {cmd.currency} account")
            return account

        account = await run_once(
            uow,
            principal=cmd.caller.key,
            request_id=cmd.request_id,
            method="OpenAccount",
            command=cmd,
            result_type=Account,
            execute=execute,
        )
        note_resources(account.account_id)
        await uow.commit()
        return account


@retry_on_conflict
async def get_account(cmd: GetAccount, uow: UnitOfWork) -> Account:
    async with uow:
        note_resources(cmd.account_id)
        account = await load_own_account(uow, cmd.caller, cmd.account_id)
        await uow.commit()
        return account


@retry_on_conflict
async def list_accounts(cmd: ListAccounts, uow: UnitOfWork) -> AccountPage:
    async with uow:
        found = await uow.ledger.list_user_accounts(
            cmd.caller.user_id, after=cmd.after, limit=cmd.page_size + 1
        )
        page = tuple(found[: cmd.page_size])
        more = len(found) > cmd.page_size
        await uow.commit()
        last = page[-1] if page else None
        return AccountPage(
            page, (last.created_at, last.account_id) if more and last is not None else None
        )
