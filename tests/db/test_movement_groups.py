"""Group commit of transfers and deposits on the real database: order, replay, audit, isolation."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.conftest import Ledger
from tests.db.test_transfers import transfer_cmd
from tests.ledger_checks import count, ledger_violations
from wallet_server import services
from wallet_server.domain import (
    FailedPrecondition,
    Money,
    NotFound,
    Reason,
    Transaction,
    UserPrincipal,
    WalletError,
)

Grouped = services.GroupedMovement


async def funded(ledger: Ledger, name: str, amount_minor: int) -> tuple[UserPrincipal, UUID]:
    user = await ledger.user(name)
    account = await ledger.account(user)
    if amount_minor:
        await ledger.deposit(await ledger.partner(f"p-{name}"), account, amount_minor)
    return user, account


async def test_a_group_decides_each_transfer_in_order_against_running_balances(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice, a = await funded(ledger, "alice", 100)
    bob, b = await funded(ledger, "bob", 0)
    carol, c = await funded(ledger, "carol", 0)
    first = transfer_cmd(alice, a, b, 70)
    too_much = transfer_cmd(alice, a, c, 50)
    onwards = transfer_cmd(bob, b, None, 60, to_username="Carol")

    decided = await services.movement_group(
        [Grouped(first, None), Grouped(too_much, None), Grouped(onwards, None)], uow()
    )

    outcomes = [d.outcome for d in decided]
    assert isinstance(outcomes[0], Transaction)
    assert isinstance(outcomes[1], FailedPrecondition)
    assert outcomes[1].reason == Reason.INSUFFICIENT_FUNDS
    assert isinstance(outcomes[2], Transaction)
    assert outcomes[2].to_account_id == c
    assert await ledger.balance(alice, a) == 30
    assert await ledger.balance(bob, b) == 10
    assert await ledger.balance(carol, c) == 60
    # One database transaction wrote both transfers.
    assert (
        await count(
            clean_db, "SELECT count(DISTINCT xmin::text) FROM transactions WHERE kind = 'transfer'"
        )
        == 1
    )
    assert await ledger_violations(clean_db) == []

    # The refusal is remembered: after a top-up, the same request still gets it.
    await ledger.deposit(await ledger.partner("later"), a, 1_000)
    again = await services.movement_group([Grouped(too_much, None)], uow())
    assert isinstance(again[0].outcome, FailedPrecondition)
    assert again[0].outcome.reason == Reason.INSUFFICIENT_FUNDS
    assert await ledger.balance(carol, c) == 60


async def test_a_replayed_transfer_returns_the_first_result_and_a_changed_one_is_refused(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice, a = await funded(ledger, "alice", 100)
    _, b = await funded(ledger, "bob", 0)
    cmd = transfer_cmd(alice, a, b, 10)
    first = await services.movement_group([Grouped(cmd, None)], uow())

    changed = transfer_cmd(alice, a, b, 11, request_id=cmd.request_id)
    replayed = await services.movement_group(
        [Grouped(cmd, None), Grouped(transfer_cmd(alice, a, b, 5), None)], uow()
    )
    reused = await services.movement_group([Grouped(changed, None)], uow())

    assert replayed[0].outcome == first[0].outcome
    assert isinstance(reused[0].outcome, FailedPrecondition)
    assert reused[0].outcome.reason == Reason.IDEMPOTENCY_KEY_REUSED
    assert await ledger.balance(alice, a) == 85
    # The single-transfer path sees the same record.
    assert await services.transfer(cmd, uow()) == first[0].outcome


async def test_a_group_may_not_hold_one_key_twice(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork]
) -> None:
    alice, a = await funded(ledger, "alice", 100)
    _, b = await funded(ledger, "bob", 0)
    cmd = transfer_cmd(alice, a, b, 10)
    with pytest.raises(ValueError, match="idempotency key twice"):
        await services.movement_group([Grouped(cmd, None), Grouped(cmd, None)], uow())


async def test_refusals_for_unknown_accounts_are_not_found_and_remembered(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork]
) -> None:
    alice, a = await funded(ledger, "alice", 100)
    mallory, m = await funded(ledger, "mallory", 0)
    steal = transfer_cmd(mallory, a, m, 10)  # not mallory's account
    nobody = transfer_cmd(alice, a, None, 10, to_username="nobody")
    decided = await services.movement_group([Grouped(steal, None), Grouped(nobody, None)], uow())
    assert all(isinstance(d.outcome, NotFound) for d in decided)
    assert await ledger.balance(alice, a) == 100


def _call(method: str = "/wallet.v1.WalletService/Transfer") -> services.CallRecord:
    return services.CallRecord(method=method, peer="ipv4:127.0.0.1:1", started_at=datetime.now(UTC))


async def test_concurrent_calls_share_commits_conserve_money_and_are_audited_once(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    users = [await funded(ledger, f"user{i}", 1_000) for i in range(6)]
    groups = services.MovementGroups(uow)
    groups.start()
    calls: list[services.CallRecord] = []

    async def one(i: int, request_id: UUID) -> Transaction | WalletError:
        record = _call()
        calls.append(record)
        services.begin_call(record)
        (user, source), (_, destination) = users[i % 6], users[(i * 5 + 1) % 6]
        try:
            return await groups.transfer(
                transfer_cmd(user, source, destination, 1 + i % 300, request_id=request_id)
            )
        except WalletError as exc:
            return exc

    keys = [uuid4() for _ in range(150)]
    # Every key twice: the second call must get the first one's answer.
    jobs = [(i % 150, keys[i % 150]) for i in range(300)]
    results = await asyncio.gather(
        *(asyncio.create_task(one(i, k), context=contextvars.Context()) for i, k in jobs)
    )
    await groups.stop()

    by_key: dict[UUID, list[Transaction | WalletError]] = {}
    for (_, key), result in zip(jobs, results, strict=True):
        by_key.setdefault(key, []).append(result)
    for first, second in by_key.values():
        assert type(first) is type(second)
        if isinstance(first, Transaction):
            assert first == second
    moved = [r for r in results if isinstance(r, Transaction)]
    assert moved, "some transfers must go through"
    assert await count(clean_db, "SELECT count(*) FROM transactions WHERE kind = 'transfer'") == (
        len(moved) // 2
    )
    commits = await count(
        clean_db, "SELECT count(DISTINCT xmin::text) FROM transactions WHERE kind = 'transfer'"
    )
    assert commits < len(moved) // 2, "concurrent transfers should share commits"
    assert await ledger_violations(clean_db) == []
    # Exactly one audit row per call, in the same transaction as its effect.
    assert all(record.audited for record in calls)
    assert await count(
        clean_db, "SELECT count(*) FROM audit_log WHERE method = :m", m=calls[0].method
    ) == len(calls)


async def test_a_group_that_fails_as_a_whole_runs_each_call_alone(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice, a = await funded(ledger, "alice", 1_000)
    _, b = await funded(ledger, "bob", 0)
    groups = services.MovementGroups(uow)
    groups.start()
    good = [transfer_cmd(alice, a, b, 10) for _ in range(5)]
    # The database refuses a NUL character in text; this one transfer cannot be written.
    bad = transfer_cmd(alice, a, b, 10, memo="nul\x00")

    results = await asyncio.gather(
        *(groups.transfer(cmd) for cmd in [*good[:2], bad, *good[2:]]), return_exceptions=True
    )
    await groups.stop()

    assert not isinstance(results[2], Transaction | WalletError)  # an internal error
    assert all(isinstance(r, Transaction) for i, r in enumerate(results) if i != 2)
    assert await ledger.balance(alice, a) == 1_000 - 50
    assert await ledger_violations(clean_db) == []
    # The failed request left no idempotency record: a corrected retry may use the key.
    assert (
        await count(
            clean_db,
            "SELECT count(*) FROM idempotency_keys WHERE request_id = :r",
            r=bad.request_id,
        )
        == 0
    )


async def test_after_stop_transfers_still_run_alone(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork]
) -> None:
    alice, a = await funded(ledger, "alice", 100)
    _, b = await funded(ledger, "bob", 0)
    groups = services.MovementGroups(uow)
    groups.start()
    await groups.stop()
    tx = await groups.transfer(transfer_cmd(alice, a, b, 10))
    assert tx.amount.amount_minor == 10
    assert await ledger.balance(alice, a) == 90


async def test_concurrent_deposits_from_one_partner_share_commits_and_replay_once(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    holders = [await funded(ledger, f"user{i}", 0) for i in range(5)]
    partner = await ledger.partner("bank")
    groups = services.MovementGroups(uow)
    groups.start()
    deposits = [
        services.Deposit(
            caller=partner,
            request_id=uuid4(),
            account_id=holders[i % 5][1],
            amount=Money("USD", 100 + i),
            external_reference=f"ref-{i}",
        )
        for i in range(60)
    ]

    first = await asyncio.gather(*(groups.deposit(d) for d in deposits))
    again = await asyncio.gather(*(groups.deposit(d) for d in deposits[:10]))
    await groups.stop()

    assert again == first[:10]
    assert all(tx.partner_id == partner.partner_id for tx in first)
    assert len({tx.from_account_id for tx in first}) == 1  # the partner's settlement account
    for i, (user, account) in enumerate(holders):
        assert await ledger.balance(user, account) == sum(100 + j for j in range(i, 60, 5))
    commits = await count(
        clean_db, "SELECT count(DISTINCT xmin::text) FROM transactions WHERE kind = 'deposit'"
    )
    assert commits < 60, "deposits from one settlement account should share commits"
    assert await ledger_violations(clean_db) == []


async def test_a_deposit_into_a_system_account_is_not_found(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork]
) -> None:
    _, account = await funded(ledger, "alice", 0)
    partner = await ledger.partner("bank")
    groups = services.MovementGroups(uow)
    groups.start()
    ok = await groups.deposit(
        services.Deposit(
            caller=partner,
            request_id=uuid4(),
            account_id=account,
            amount=Money("USD", 5),
            external_reference="",
        )
    )
    assert ok.from_account_id is not None
    with pytest.raises(NotFound):
        await groups.deposit(
            services.Deposit(
                caller=partner,
                request_id=uuid4(),
                account_id=ok.from_account_id,  # the settlement account itself
                amount=Money("USD", 5),
                external_reference="",
            )
        )
    await groups.stop()


async def until_a_lock_is_awaited(engine: AsyncEngine) -> None:
    for _ in range(1000):
        if await count(engine, "SELECT count(*) FROM pg_locks WHERE NOT granted"):
            return
        await asyncio.sleep(0.01)
    pytest.fail("nothing waited for the lock")


async def test_a_call_cancelled_while_its_group_is_written_keeps_the_groups_audit_row(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice, a = await funded(ledger, "alice", 100)
    _, b = await funded(ledger, "bob", 0)
    groups = services.MovementGroups(uow)
    groups.start()
    record = _call()
    cmd = transfer_cmd(alice, a, b, 10)

    async def call() -> Transaction:
        services.begin_call(record)
        return await groups.transfer(cmd)

    async with clean_db.connect() as blocker:
        # Hold alice's account row: the group takes its claim, then waits for this lock.
        await blocker.execute(
            text("SELECT 1 FROM accounts WHERE account_id = :a FOR UPDATE"), {"a": a}
        )
        task = asyncio.create_task(call(), context=contextvars.Context())
        await until_a_lock_is_awaited(clean_db)
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done(), "the call waits for its group's outcome"
        await blocker.rollback()
    with pytest.raises(asyncio.CancelledError):
        await task
    await groups.stop()

    assert await ledger.balance(alice, a) == 90  # the group went through
    assert record.audited  # so transport writes no second, "CANCELLED" row
    row = await count(
        clean_db,
        "SELECT count(*) FROM audit_log WHERE call_id = :c AND code = 'OK' "
        "AND cardinality(resource_ids) = 3",
        c=record.call_id,
    )
    assert row == 1
