"""Calls cancelled at any point (a client that hangs up, a deadline that passes) leave no call
half applied, end cancelled, and leave every pooled connection answering its own statements.

Cancellation can cut a pipeline off while its answers are still coming; a connection left
so must never serve the next transaction, which would read those answers as its own (an
empty lookup, a wrong row). A pool of three connections serves every call here, so each
is reused after many cancellations. A cancellation can also close the connection under a
savepoint, whose rollback then fails: the error already leaving must come out, not that one.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from uuid import UUID, uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.conftest import Ledger
from tests.db.test_batch import batch, item, settlement
from tests.db.test_orders import Shop
from tests.db.test_transfers import transfer_cmd
from tests.db.test_writes_at_commit import break_the_connection_then_raise
from tests.ledger_checks import count, ledger_violations
from wallet_server import services
from wallet_server.domain import Money, PartnerPrincipal, UserPrincipal
from wallet_server.security import partner_spiffe_id
from wallet_server.storage import create_engine, driver_of
from wallet_server.storage.repositories import PrincipalRepository

POOL = 3
ROUNDS = 60


@pytest.fixture
async def small_pool(database_url: str, clean_db: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=POOL)
    yield engine
    await engine.dispose()


class Calls:
    """One of each money call on the small pool, each a fresh request."""

    def __init__(
        self,
        engine: AsyncEngine,
        payer: UserPrincipal,
        payer_account: UUID,
        payee_account: UUID,
        partner: PartnerPrincipal,
        partner_settlement: UUID,
    ) -> None:
        self.engine = engine
        self.shop = Shop(self.uow)
        self.payer, self.a, self.b = payer, payer_account, payee_account
        self.partner, self.s = partner, partner_settlement

    def uow(self) -> services.UnitOfWork:
        return services.UnitOfWork(self.engine)

    async def transfers(self) -> object:
        group = [
            services.GroupedMovement(transfer_cmd(self.payer, self.a, self.b, 1), None)
            for _ in range(3)
        ]
        return await services.movement_group(group, self.uow())

    async def payment(self) -> object:
        order = await self.shop.order(self.partner, 2)
        return await self.shop.pay(self.payer, order, self.a)

    async def deposit(self) -> object:
        cmd = services.Deposit(
            caller=self.partner,
            request_id=uuid4(),
            account_id=self.b,
            amount=Money("USD", 3),
            external_reference="cancelled-calls",
        )
        return await services.deposit(cmd, self.uow())

    async def batch(self) -> object:
        items = [item(self.s, (self.a, self.b)[i % 2], 1) for i in range(60)]
        return await services.create_transfers(batch(self.partner, items), self.uow())

    def all(self) -> list[Callable[[], Awaitable[object]]]:
        return [self.transfers, self.payment, self.deposit, self.batch]


async def _run_and_cancel(calls: Calls, rng: random.Random) -> int:
    """Start every kind of call twice at once and cancel one of each pair after a random
    moment (the other runs to its end beside it); how many were cancelled before they
    ended."""
    doomed = [asyncio.ensure_future(call()) for call in calls.all()]
    kept = [asyncio.ensure_future(call()) for call in calls.all()]
    await asyncio.sleep(rng.uniform(0, 0.03))
    for task in doomed:
        task.cancel()
    for task in kept:
        await task
    cancelled = 0
    for task in doomed:
        try:
            await task
        except asyncio.CancelledError:
            cancelled += 1
    return cancelled


async def _answers_its_own_statements(
    engine: AsyncEngine, partner: PartnerPrincipal | None
) -> None:
    """Every connection of the pool, all checked out at once, through the toolkit and the
    driver, answers what it is asked and nothing left over from before."""
    conns = [await engine.connect() for _ in range(POOL)]
    try:
        for n, conn in enumerate(conns):
            asked = await conn.execute(text("SELECT CAST(:n AS int)"), {"n": n})
            assert asked.scalar_one() == n
            if partner is not None:
                found = await PrincipalRepository(conn).partner_by_spiffe_id(
                    partner_spiffe_id(partner.name)
                )
                assert found == partner
            cur = await (await driver_of(conn)).execute("SELECT %s::text", (f"driver-{n}",))
            assert await cur.fetchall() == [(f"driver-{n}",)]
            await conn.rollback()
    finally:
        for conn in conns:
            await conn.close()


async def test_calls_cancelled_at_random_moments_leave_the_pool_and_the_ledger_sound(
    small_pool: AsyncEngine, ledger: Ledger, clean_db: AsyncEngine
) -> None:
    payer = await ledger.user("alice")
    a = await ledger.account(payer)
    b = await ledger.account(await ledger.user("bob"))
    partner = await ledger.partner("acme")
    await ledger.deposit(partner, a, 1_000_000)
    s = await settlement(ledger.uow, partner)
    calls = Calls(small_pool, payer, a, b, partner, s)
    rng = random.Random(20261207)

    cancelled = 0
    for _ in range(ROUNDS):
        cancelled += await _run_and_cancel(calls, rng)

    # Many cancellations met calls still running, at every stage. How many of them came
    # in time depends on the machine's speed.
    assert cancelled > ROUNDS // 2
    await _answers_its_own_statements(small_pool, partner)
    assert await ledger_violations(clean_db) == []
    # A cancelled call rolled back whole: no key stays claimed without its response.
    unanswered = "SELECT count(*) FROM idempotency_keys WHERE response IS NULL"
    assert await count(clean_db, unanswered) == 0
    # And the pool still serves every kind of call.
    for call in calls.all():
        await call()
    assert await ledger_violations(clean_db) == []


@pytest.mark.parametrize("leaving", [LookupError(), asyncio.CancelledError()])
async def test_the_error_leaving_a_savepoint_outlives_its_broken_rollback(
    small_pool: AsyncEngine, leaving: BaseException
) -> None:
    with pytest.raises(type(leaving)):
        await break_the_connection_then_raise(small_pool, leaving, in_savepoint=True)
    await _answers_its_own_statements(small_pool, None)
