"""A partner's settlement accounts: where its deposits come from and its payouts go."""

from __future__ import annotations

from wallet_server.domain import (
    INT64_MAX,
    INT64_MIN,
    Account,
    FailedPrecondition,
    Reason,
    id_text,
)
from wallet_server.services._commands import ListSettlementAccounts
from wallet_server.services._results import SettlementAccountPage
from wallet_server.services._retry import retry_on_conflict
from wallet_server.services._unit_of_work import UnitOfWork

__all__ = ["list_settlement_accounts"]


def _ensure_in_range(account: Account) -> None:
    """A system account's changes are appended without a lock, and their sum can pass what
    ``Money`` carries (``VerifyLedger`` reports it); such a balance cannot be listed."""
    if not INT64_MIN <= account.posted <= INT64_MAX:
        raise FailedPrecondition(
            f"the balance of the {account.currency} settlement account is outside the int64 "
            "range of minor units; an operator must look at it",
            reason=Reason.AMOUNT_OVERFLOW,
            metadata={"account_id": id_text(account.account_id)},
        )


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
        page = tuple(found[: cmd.page_size])
        for account in page:
            _ensure_in_range(account)
        await uow.commit()
    more = len(found) > cmd.page_size
    return SettlementAccountPage(page, page[-1].currency if more and page else None)
