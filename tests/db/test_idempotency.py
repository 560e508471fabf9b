"""Idempotency: a retried request applies once and returns the original answer."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from uuid import uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.db.conftest import Ledger
from tests.db.test_transfers import transfer_cmd
from tests.ledger_checks import count, ledger_violations
from wallet_server import services
from wallet_server.domain import AccountKind, FailedPrecondition, Reason
from wallet_server.services._idempotency import run_once


async def test_replay_returns_the_original_transaction_and_moves_money_once(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice, bob = await ledger.user("alice"), await ledger.user("bob")
    a, b = await ledger.account(alice), await ledger.account(bob)
    await ledger.deposit(await ledger.partner(), a, 1_000)
    cmd = transfer_cmd(alice, a, b, 300)

    first = await services.transfer(cmd, uow())
    second = await services.transfer(cmd, uow())

    assert second == first
    assert await ledger.balance(alice, a) == 700
    assert await count(clean_db, "SELECT count(*) FROM transactions WHERE kind='transfer'") == 1


async def test_same_key_different_payload_is_refused(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork]
) -> None:
    alice, bob = await ledger.user("alice"), await ledger.user("bob")
    a, b = await ledger.account(alice), await ledger.account(bob)
    await ledger.deposit(await ledger.partner(), a, 1_000)
    key = uuid4()
    await services.transfer(transfer_cmd(alice, a, b, 300, request_id=key), uow())

    with pytest.raises(FailedPrecondition) as caught:
        await services.transfer(transfer_cmd(alice, a, b, 301, request_id=key), uow())

    assert caught.value.reason == Reason.IDEMPOTENCY_KEY_REUSED
    assert await ledger.balance(alice, a) == 700


async def test_keys_are_scoped_to_the_caller(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork]
) -> None:
    alice, bob = await ledger.user("alice"), await ledger.user("bob")
    a, b = await ledger.account(alice), await ledger.account(bob)
    partner = await ledger.partner()
    await ledger.deposit(partner, a, 1_000)
    await ledger.deposit(partner, b, 1_000)
    key = uuid4()

    await services.transfer(transfer_cmd(alice, a, b, 100, request_id=key), uow())
    await services.transfer(transfer_cmd(bob, b, a, 100, request_id=key), uow())

    assert await ledger.balance(alice, a) == 1_000
    assert await ledger.balance(bob, b) == 1_000


async def test_a_refusal_is_remembered_even_after_funds_arrive(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork]
) -> None:
    alice, bob = await ledger.user("alice"), await ledger.user("bob")
    a, b = await ledger.account(alice), await ledger.account(bob)
    cmd = transfer_cmd(alice, a, b, 300)
    with pytest.raises(FailedPrecondition):
        await services.transfer(cmd, uow())
    await ledger.deposit(await ledger.partner(), a, 1_000)

    with pytest.raises(FailedPrecondition) as caught:
        await services.transfer(cmd, uow())

    assert caught.value.reason == Reason.INSUFFICIENT_FUNDS
    assert await ledger.balance(alice, a) == 1_000


async def test_the_same_request_sent_concurrently_applies_once(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice, bob = await ledger.user("alice"), await ledger.user("bob")
    a, b = await ledger.account(alice), await ledger.account(bob)
    await ledger.deposit(await ledger.partner(), a, 1_000)
    cmd = transfer_cmd(alice, a, b, 100)

    results = await asyncio.gather(*(services.transfer(cmd, uow()) for _ in range(20)))

    assert len({r.transaction_id for r in results}) == 1
    assert await ledger.balance(alice, a) == 900
    assert await count(clean_db, "SELECT count(*) FROM transactions WHERE kind='transfer'") == 1
    assert await ledger_violations(clean_db) == []


async def test_open_account_replay_returns_the_same_account(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice = await ledger.user("alice")
    cmd = services.OpenAccount(caller=alice, request_id=uuid4(), currency="JPY")
    first = await services.open_account(cmd, uow())
    second = await services.open_account(cmd, uow())
    assert first == second
    assert await count(clean_db, "SELECT count(*) FROM accounts WHERE kind='user'") == 1


async def test_records_older_than_the_retention_are_purged_and_newer_ones_kept(
    ledger: Ledger, clean_db: AsyncEngine
) -> None:
    alice = await ledger.user("alice")
    await ledger.account(alice, "USD")
    await ledger.account(alice, "EUR")
    async with clean_db.begin() as conn:
        await conn.execute(
            text(
                "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' "
                "WHERE request_id = (SELECT request_id FROM idempotency_keys "
                "ORDER BY created_at LIMIT 1)"
            )
        )

    removed = await services.purge_idempotency_records(
        services.UnitOfWork(clean_db), timedelta(hours=24)
    )

    assert removed == 1
    assert await count(clean_db, "SELECT count(*) FROM idempotency_keys") == 1


async def open_chf_once(
    unit: services.UnitOfWork,
    cmd: services.OpenAccount,
    effect: Callable[[services.UnitOfWork], Awaitable[None]],
) -> None:
    """``effect`` as the call ``cmd`` would run it, inside ``unit``'s transaction."""
    await run_once(
        unit,
        principal=cmd.caller.key,
        request_id=cmd.request_id,
        method="OpenAccount",
        command=cmd,
        result_type=type(None),
        execute=functools.partial(effect, unit),
    )


async def test_a_refused_call_keeps_its_refusal_and_none_of_its_writes(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    """Writes made before a refusal are undone by the call's savepoint; the claim and the
    remembered refusal commit; a retry replays the refusal without running again."""
    alice = await ledger.user("alice")
    cmd = services.OpenAccount(caller=alice, request_id=uuid4(), currency="CHF")
    runs = 0

    async def write_then_refuse(unit: services.UnitOfWork) -> None:
        nonlocal runs
        runs += 1
        await unit.ledger.ensure_system_account(
            account_id=uuid4(), kind=AccountKind.FEES, currency="CHF"
        )
        unit.events.append([("test.event", None, [], json.dumps({"n": runs}))])
        raise FailedPrecondition("refused after writing", reason=Reason.INSUFFICIENT_FUNDS)

    for _ in range(2):
        unit = uow()
        async with unit:
            with pytest.raises(FailedPrecondition, match="refused after writing"):
                await open_chf_once(unit, cmd, write_then_refuse)

    assert runs == 1
    assert await count(clean_db, "SELECT count(*) FROM accounts WHERE currency = 'CHF'") == 0
    assert await count(clean_db, "SELECT count(*) FROM outbox WHERE type = 'test.event'") == 0
    stored = "SELECT count(*) FROM idempotency_keys WHERE response::json -> 'error' IS NOT NULL"
    assert await count(clean_db, stored) == 1


async def test_a_failure_inside_the_effect_rolls_the_call_back_and_frees_its_connection(
    ledger: Ledger, clean_db: AsyncEngine
) -> None:
    """An error that is not a remembered refusal (a bug, a lost connection, a deadlock)
    leaves nothing, not even the claim, and the one pooled connection serves the retry."""
    alice = await ledger.user("alice")
    cmd = services.OpenAccount(caller=alice, request_id=uuid4(), currency="CHF")
    engine = create_async_engine(clean_db.url, pool_size=1, max_overflow=0)
    attempts: list[bool] = [True, False]  # the first attempt fails after writing

    async def write(unit: services.UnitOfWork) -> None:
        await unit.ledger.ensure_system_account(
            account_id=uuid4(), kind=AccountKind.FEES, currency="CHF"
        )
        if attempts.pop(0):
            raise RuntimeError("boom")

    async def call() -> None:
        unit = services.UnitOfWork(engine)
        async with unit:
            await open_chf_once(unit, cmd, write)
            await unit.commit()

    try:
        with pytest.raises(RuntimeError, match="boom"):
            await call()
        assert await count(clean_db, "SELECT count(*) FROM idempotency_keys") == 0
        assert await count(clean_db, "SELECT count(*) FROM accounts WHERE currency = 'CHF'") == 0
        async with asyncio.timeout(10):
            await call()
    finally:
        await engine.dispose()
    assert attempts == []
    assert await count(clean_db, "SELECT count(*) FROM accounts WHERE currency = 'CHF'") == 1
    stored = "SELECT count(*) FROM idempotency_keys WHERE response::json -> 'result' IS NOT NULL"
    assert await count(clean_db, stored) == 1
