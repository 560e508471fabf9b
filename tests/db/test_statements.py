"""Statements on the real database: opening balance, the period's entries with running
balances and the closing balance agree with each other and with the ledger, across pages."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.conftest import Ledger
from wallet_server import services
from wallet_server.domain import (
    FailedPrecondition,
    InvalidArgument,
    Money,
    NotFound,
    Reason,
    UserPrincipal,
)

JAN = datetime(2025, 1, 1, tzinfo=UTC)


def day(n: int, hours: int = 0) -> datetime:
    return JAN + timedelta(days=n - 1, hours=hours)


PERIOD_START, PERIOD_END = day(10), day(20)


class Clock:
    def __init__(self) -> None:
        self.now = day(1)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def timed(clean_db: AsyncEngine, clock: Clock) -> Callable[[], services.UnitOfWork]:
    return lambda: services.UnitOfWork(clean_db, clock=clock)


@pytest.fixture
def timed_ledger(timed: Callable[[], services.UnitOfWork], policy: services.AuthPolicy) -> Ledger:
    return Ledger(timed, policy)


class History:
    """Alice's USD account with movements before, inside and after [day 10, day 20)."""

    async def build(self, ledger: Ledger, clock: Clock) -> History:
        self.ledger, self.clock = ledger, clock
        self.alice = await ledger.user("alice")
        self.bob = await ledger.user("bob")
        self.a = await ledger.account(self.alice)
        self.b = await ledger.account(self.bob)
        self.partner = await ledger.partner()
        await self.at(day(1), ledger.deposit(self.partner, self.a, 1_000))
        await self.at(day(2), self.transfer(self.alice, self.a, self.b, 200))
        await self.at(day(9, 23), ledger.deposit(self.partner, self.b, 5_000))
        await self.at(day(10), ledger.deposit(self.partner, self.a, 500))  # start: inclusive
        await self.at(day(15), self.transfer(self.alice, self.a, self.b, 300))
        await self.at(day(16), self.transfer(self.bob, self.b, self.a, 50))
        await self.at(day(17), self.transfer(self.bob, self.b, self.a, 25))
        await self.at(day(20), ledger.deposit(self.partner, self.a, 70))  # end: exclusive
        await self.at(day(25), self.transfer(self.alice, self.a, self.b, 10))
        clock.now = day(30)
        return self

    async def at(self, when: datetime, action: object) -> None:
        self.clock.now = when
        await action  # type: ignore[misc]

    async def transfer(
        self, caller: UserPrincipal, source: UUID, destination: UUID, amount: int
    ) -> None:
        await services.transfer(
            services.Transfer(
                caller=caller,
                request_id=uuid4(),
                from_account_id=source,
                to_account_id=destination,
                to_username=None,
                amount=Money("USD", amount),
                memo="",
            ),
            self.ledger.uow(),
        )


@pytest.fixture
async def history(timed_ledger: Ledger, clock: Clock) -> History:
    return await History().build(timed_ledger, clock)


def cmd(
    caller: UserPrincipal,
    account_id: UUID,
    start: datetime = PERIOD_START,
    end: datetime = PERIOD_END,
    page_size: int = 50,
    position: services.StatementPosition | None = None,
) -> services.GetStatement:
    return services.GetStatement(
        caller=caller,
        account_id=account_id,
        start_time=start,
        end_time=end,
        page_size=page_size,
        position=position,
    )


def usd(minor: int) -> Money:
    return Money("USD", minor)


def header(s: services.AccountStatement) -> tuple[object, ...]:
    return (
        s.account_id,
        s.currency,
        s.start_time,
        s.end_time,
        s.opening_balance,
        s.closing_balance,
        s.total_credits,
        s.total_debits,
    )


async def test_statement_of_a_period(
    history: History, timed: Callable[[], services.UnitOfWork]
) -> None:
    h = history
    statement = await services.get_statement(cmd(h.alice, h.a), timed())

    assert statement.opening_balance == usd(800)
    assert [e.amount for e in statement.entries] == [usd(500), usd(-300), usd(50), usd(25)]
    assert [e.balance_after for e in statement.entries] == [
        usd(1_300),
        usd(1_000),
        usd(1_050),
        usd(1_075),
    ]
    assert [e.transaction.posted_at for e in statement.entries] == [
        day(10),
        day(15),
        day(16),
        day(17),
    ]
    assert (statement.total_credits, statement.total_debits) == (usd(575), usd(300))
    assert statement.closing_balance == usd(1_075)
    assert statement.closing_balance == statement.opening_balance + usd(
        sum(e.amount.amount_minor for e in statement.entries)
    )
    assert statement.closing_balance == statement.entries[-1].balance_after
    assert statement.next_position is None
    assert (statement.end_time, statement.created_at) == (day(20), day(30))
    # The entries carry their transactions with the legs.
    entry = statement.entries[1]
    assert (entry.transaction.from_account_id, entry.transaction.to_account_id) == (h.a, h.b)
    assert sorted(p.amount for p in entry.transaction.postings) == [-300, 300]


async def test_consecutive_periods_chain_and_the_last_closes_at_the_balance(
    history: History, timed: Callable[[], services.UnitOfWork]
) -> None:
    h = history
    edges = [day(1) - timedelta(days=1), day(5), day(10), day(16), day(20), day(30)]
    statements = [
        await services.get_statement(cmd(h.alice, h.a, start, end), timed())
        for start, end in itertools.pairwise(edges)
    ]
    for earlier, later in itertools.pairwise(statements):
        assert later.opening_balance == earlier.closing_balance
    assert statements[0].opening_balance == usd(0)
    assert statements[-1].closing_balance == usd(await h.ledger.balance(h.alice, h.a))
    assert sum(len(s.entries) for s in statements) == 8  # every posting of the account
    for s in statements:
        assert s.closing_balance == s.opening_balance + s.total_credits - s.total_debits


async def test_pages_repeat_the_header_and_chain_their_running_balances(
    history: History, timed: Callable[[], services.UnitOfWork]
) -> None:
    h = history
    whole = await services.get_statement(cmd(h.alice, h.a), timed())
    pages = []
    position = None
    while True:
        page = await services.get_statement(
            cmd(h.alice, h.a, page_size=1, position=position), timed()
        )
        pages.append(page)
        position = page.next_position
        if position is None:
            break

    assert len(pages) == 4
    assert {header(p) for p in pages} == {header(whole)}
    assert [e for p in pages for e in p.entries] == list(whole.entries)


async def test_a_period_reaching_into_the_future_is_fixed_by_its_first_page(
    history: History, timed: Callable[[], services.UnitOfWork], clock: Clock
) -> None:
    h = history
    clock.now = day(16, 12)
    future = day(1) + timedelta(days=3650)
    first = await services.get_statement(cmd(h.alice, h.a, end=future, page_size=2), timed())
    assert first.end_time == day(16, 12)
    assert [e.amount for e in first.entries] == [usd(500), usd(-300)]
    assert first.closing_balance == usd(1_050)  # the day-17 transfer is after "now"

    # Later pages keep the end of the first, whatever happened since.
    clock.now = day(40)
    await h.transfer(h.bob, h.b, h.a, 1)
    second = await services.get_statement(
        cmd(h.alice, h.a, end=future, page_size=2, position=first.next_position), timed()
    )
    assert header(second) == header(first)
    assert [e.amount for e in second.entries] == [usd(50)]
    assert second.entries[-1].balance_after == first.closing_balance
    assert second.next_position is None


async def test_an_empty_period_has_equal_opening_and_closing(
    history: History, timed: Callable[[], services.UnitOfWork]
) -> None:
    h = history
    statement = await services.get_statement(cmd(h.alice, h.a, day(3), day(9)), timed())
    assert statement.entries == ()
    assert statement.opening_balance == statement.closing_balance == usd(800)
    assert (statement.total_credits, statement.total_debits) == (usd(0), usd(0))


async def test_another_users_account_is_not_found(
    history: History, timed: Callable[[], services.UnitOfWork]
) -> None:
    h = history
    for account_id in (h.b, uuid4()):
        with pytest.raises(NotFound) as caught:
            await services.get_statement(cmd(h.alice, account_id), timed())
        assert caught.value.reason == Reason.NOT_FOUND


@pytest.mark.parametrize(
    ("start", "end", "position", "field"),
    [
        (day(10), day(10), None, "end_time"),
        (day(11), day(10), None, "end_time"),
        # A position outside the period cannot come from this listing.
        (day(10), day(20), services.StatementPosition(day(21), day(15), 1), "page_token"),
        (day(10), day(20), services.StatementPosition(day(20), day(9), 1), "page_token"),
    ],
)
async def test_bad_periods_are_invalid(
    history: History,
    timed: Callable[[], services.UnitOfWork],
    start: datetime,
    end: datetime,
    position: services.StatementPosition | None,
    field: str,
) -> None:
    h = history
    with pytest.raises(InvalidArgument) as caught:
        await services.get_statement(cmd(h.alice, h.a, start, end, position=position), timed())
    assert [v.field for v in caught.value.violations] == [field]


async def test_totals_past_the_int64_range_are_amount_overflow_and_shorter_periods_work(
    timed_ledger: Ledger, clock: Clock, timed: Callable[[], services.UnitOfWork]
) -> None:
    # Every balance fits int64 all along; the period's credits to b add up to twice the most.
    h = History()
    h.ledger, h.clock = timed_ledger, clock
    alice, bob = await timed_ledger.user("alice"), await timed_ledger.user("bob")
    a, b = await timed_ledger.account(alice), await timed_ledger.account(bob)
    most = 2**63 - 1
    await h.at(day(1), timed_ledger.deposit(await timed_ledger.partner(), a, most))
    await h.at(day(2), h.transfer(alice, a, b, most))
    await h.at(day(3), h.transfer(bob, b, a, most))
    await h.at(day(4), h.transfer(alice, a, b, most))
    clock.now = day(30)

    with pytest.raises(FailedPrecondition) as caught:
        await services.get_statement(cmd(bob, b, day(1), day(10)), timed())
    shorter = await services.get_statement(cmd(bob, b, day(1), day(3, 12)), timed())

    assert caught.value.reason == Reason.AMOUNT_OVERFLOW
    assert "shorter period" in caught.value.message
    assert (shorter.total_credits, shorter.total_debits) == (usd(most), usd(most))
    assert shorter.closing_balance == usd(0)
