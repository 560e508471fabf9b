"""A partner's settlement accounts: where its deposits come from and its payouts go."""

from __future__ import annotations

from wallet_server.services._commands import ListSettlementAccounts
from wallet_server.services._results import SettlementAccountPage
from wallet_server.services._retry import retry_on_conflict
from wallet_server.services._unit_of_work import UnitOfWork

__all__ = ["list_settlement_accounts"]


@retry_on_conflict
async def list_settlement_accounts(
    cmd: ListSettlementAccounts, uow: UnitOfWork
) -> SettlementAccountPage:
    """The caller's settlement accounts by currency code, one page; balances are current
    (they include the changes appended since the last fold) and may be negative."""
    async with uow:
        found = await uow.ledger.list_settlement_accounts(
            cmd.caller.partner_id, after=cmd.after_currency, limit=cmd.page_size + 1
        )
        await uow.commit()
    page = tuple(found[: cmd.page_size])
    more = len(found) > cmd.page_size
    return SettlementAccountPage(page, page[-1].currency if more and page else None)
