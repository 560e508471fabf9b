"""Clients that give up: money calls whose deadline passes or that the client cancels, at
random moments, on a server with a pool of three connections. Afterwards every user and the
partner are still recognised, every call answers correctly, and the ledger is sound."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc import aio
from sqlalchemy.ext.asyncio import AsyncEngine
from wallet.v1 import admin_pb2, partner_pb2, wallet_pb2

from tests.e2e.conftest import Metadata, Wallet, running
from tests.e2e.test_batch import Setup, transfer, usd
from tests.ledger_checks import ledger_violations
from wallet_server.config import Settings
from wallet_server.security import DevPkiPaths
from wallet_server.storage import create_engine

ROUNDS = 25
GIVEN_UP = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}


@pytest.fixture
async def small_pool_wallet(
    database_url: str, clean_db: AsyncEngine, settings: Settings, pki: DevPkiPaths
) -> AsyncIterator[Wallet]:
    engine = create_engine(database_url, pool_size=3)
    try:
        async with running(engine, settings, pki) as wallet:
            yield wallet
    finally:
        await engine.dispose()


class Mix:
    """One of each money call, each a fresh request, with a deadline of ``timeout`` s."""

    def __init__(self, s: Setup) -> None:
        self.s = s

    def calls(self, timeout: float) -> list[Callable[[], Awaitable[Any]]]:
        s, user, partner = self.s, self.s.wallet.wallet, self.s.wallet.partner

        async def transfer_call() -> Any:
            request = wallet_pb2.TransferRequest(
                request_id=str(uuid.uuid4()), from_account_id=s.a, to_account_id=s.b, amount=usd(1)
            )
            return await user.Transfer(request, metadata=s.alice, timeout=timeout)

        async def payment() -> Any:
            order = await partner.CreateOrder(
                partner_pb2.CreateOrderRequest(
                    request_id=str(uuid.uuid4()), amount=usd(2), description="given up"
                ),
                timeout=timeout,
            )
            request = wallet_pb2.PayOrderRequest(
                request_id=str(uuid.uuid4()), order_id=order.order.order_id, from_account_id=s.a
            )
            return await user.PayOrder(request, metadata=s.alice, timeout=timeout)

        async def deposit() -> Any:
            request = partner_pb2.DepositRequest(
                request_id=str(uuid.uuid4()),
                account_id=s.b,
                amount=usd(3),
                external_reference="given up",
            )
            return await partner.Deposit(request, timeout=timeout)

        async def batch() -> Any:
            items = [transfer(s.s, (s.a, s.b)[i % 2], 1) for i in range(60)]
            request = partner_pb2.CreateTransfersRequest(
                request_id=str(uuid.uuid4()), transfers=items
            )
            return await partner.CreateTransfers(request, timeout=timeout)

        return [transfer_call, payment, deposit, batch]


async def _give_up(mix: Mix, rng: random.Random, outcomes: Counter[str]) -> None:
    """Every call three times at once: with a short deadline, cancelled by the client at a
    random moment, and left to finish."""
    short = [asyncio.ensure_future(call()) for call in mix.calls(rng.uniform(0.001, 0.08))]
    doomed = [asyncio.ensure_future(call()) for call in mix.calls(30)]
    kept = [asyncio.ensure_future(call()) for call in mix.calls(30)]
    await asyncio.sleep(rng.uniform(0, 0.08))
    for task in doomed:
        task.cancel()
    tasks = short + doomed + kept
    for task in tasks:
        outcomes[await _ending(task)] += 1


async def _ending(task: asyncio.Future[Any]) -> str:
    """OK, CANCELLED (by the client) or DEADLINE_EXCEEDED; any other status fails."""
    try:
        await task
    except asyncio.CancelledError:
        return "CANCELLED"
    except aio.AioRpcError as exc:
        code = exc.code()
    else:
        return "OK"
    assert code in GIVEN_UP, code
    return str(code.name)


async def _still_recognised(s: Setup, users: list[tuple[Metadata, str]]) -> None:
    for metadata, account_id in users:
        await s.wallet.wallet.GetAccount(
            wallet_pb2.GetAccountRequest(account_id=account_id), metadata=metadata
        )
    await s.wallet.partner.ListSettlementAccounts(partner_pb2.ListSettlementAccountsRequest())


async def test_calls_given_up_at_random_moments_leave_the_server_answering_right(
    small_pool_wallet: Wallet, caplog: pytest.LogCaptureFixture
) -> None:
    s = await Setup().build(small_pool_wallet)
    await s.wallet.deposit(s.a, 1_000_000)
    mix = Mix(s)
    rng = random.Random(20261207)
    outcomes: Counter[str] = Counter()

    for _ in range(ROUNDS):
        await _give_up(mix, rng, outcomes)

    # Calls ended every way many times: they were given up at every stage. How many of
    # the short deadlines passed and how many cancellations came in time depends on the
    # machine's speed; the calls left to finish always do.
    assert outcomes["OK"] >= 4 * ROUNDS, outcomes
    assert outcomes["CANCELLED"] > ROUNDS // 2, outcomes
    assert outcomes["DEADLINE_EXCEEDED"] > ROUNDS // 2, outcomes
    # Nothing the server met while its calls were given up was an error. (Warnings may
    # come from a busy machine: a health check that timed out on the small pool.)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    await _still_recognised(s, [(s.alice, s.a), (s.bob, s.b)])
    for call in mix.calls(timeout=30):
        await call()
    assert await ledger_violations(s.wallet.engine) == []
    report = await s.wallet.admin.VerifyLedger(admin_pb2.VerifyLedgerRequest())
    assert list(report.violations) == []
