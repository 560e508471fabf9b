"""Use cases: statements — an account's history for a period with its opening and closing
balances, consistent with each other (opening + entries = closing), also across pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from wallet_server.domain import (
    INT64_MAX,
    FailedPrecondition,
    InvalidArgument,
    Money,
    Reason,
    Transaction,
    UserPrincipal,
)
from wallet_server.services._accounts import load_own_account
from wallet_server.services._call import note_resources
from wallet_server.services._retry import retry_on_conflict
from wallet_server.services._unit_of_work import UnitOfWork


@dataclass(frozen=True, slots=True)
class StatementPosition:
    """Where the next page starts: the period's end fixed by the first page (``as_of``), and
    the last entry already returned (its post time and first posting id)."""

    as_of: datetime
    after_time: datetime
    after_posting: int


@dataclass(frozen=True, slots=True)
class GetStatement:
    caller: UserPrincipal
    account_id: UUID
    start_time: datetime
    end_time: datetime  # exclusive; a future time means "now"
    page_size: int
    position: StatementPosition | None = None  # None for the first page


@dataclass(frozen=True, slots=True)
class StatementEntry:
    transaction: Transaction
    amount: Money  # signed change of the account's posted balance
    balance_after: Money
    posting_id: int  # first posting of the transaction to the account (the page cursor)


@dataclass(frozen=True, slots=True)
class AccountStatement:
    account_id: UUID
    currency: str
    start_time: datetime
    end_time: datetime  # the effective end: never after the time of the first page
    opening_balance: Money
    closing_balance: Money
    total_credits: Money
    total_debits: Money
    entries: tuple[StatementEntry, ...]
    created_at: datetime
    next_position: StatementPosition | None  # None on the last page


def _period_end(cmd: GetStatement, now: datetime) -> datetime:
    if cmd.end_time <= cmd.start_time:
        raise InvalidArgument.for_field("end_time", "must be after start_time")
    if cmd.position is None:
        # A period that reaches into the future ends now; it stays fixed for later pages.
        return max(cmd.start_time, min(cmd.end_time, now))
    as_of = cmd.position.as_of
    if not cmd.start_time <= as_of <= cmd.end_time or not (
        cmd.start_time <= cmd.position.after_time < as_of
    ):
        raise InvalidArgument.for_field(
            "page_token", "not a token from this listing (use next_page_token as given)"
        )
    return as_of


def _ensure_totals_fit(credits: int, debits: int) -> None:
    """A period's totals are sums of many movements: each fits a balance, their sum need not
    fit ``Money`` (the balances do, always)."""
    for name, total in (("credits", credits), ("debits", debits)):
        if total > INT64_MAX:
            raise FailedPrecondition(
                f"the period's total {name} exceed the int64 range of minor units; "
                "ask for a shorter period",
                reason=Reason.AMOUNT_OVERFLOW,
            )


@retry_on_conflict
async def get_statement(cmd: GetStatement, uow: UnitOfWork) -> AccountStatement:
    """The statement of one of the caller's accounts; another's account is NOT_FOUND."""
    async with uow:
        note_resources(cmd.account_id)
        now = uow.now()
        end = _period_end(cmd, now)
        account = await load_own_account(uow, cmd.caller, cmd.account_id)
        position = cmd.position
        totals, lines = await uow.statements.statement(
            cmd.account_id,
            start=cmd.start_time,
            end=end,
            after=None if position is None else (position.after_time, position.after_posting),
            limit=cmd.page_size + 1,
        )
        _ensure_totals_fit(totals.credits, totals.debits)
        more = len(lines) > cmd.page_size
        lines = lines[: cmd.page_size]
        found = await uow.statements.transactions([line.transaction_id for line in lines])
        await uow.commit()
    money = account.money
    entries = tuple(
        StatementEntry(
            transaction=found[line.transaction_id],
            amount=money(line.amount),
            balance_after=money(line.balance_after),
            posting_id=line.posting_id,
        )
        for line in lines
    )
    last = lines[-1] if lines else None
    return AccountStatement(
        account_id=account.account_id,
        currency=account.currency,
        start_time=cmd.start_time,
        end_time=end,
        opening_balance=money(totals.opening),
        closing_balance=money(totals.opening + totals.credits - totals.debits),
        total_credits=money(totals.credits),
        total_debits=money(totals.debits),
        entries=entries,
        created_at=now,
        next_position=StatementPosition(end, last.posted_at, last.posting_id)
        if more and last is not None
        else None,
    )


__all__ = [
    "AccountStatement",
    "GetStatement",
    "StatementEntry",
    "StatementPosition",
    "get_statement",
]
