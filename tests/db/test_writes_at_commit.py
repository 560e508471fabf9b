"""Writes held for the commit: the stored response, the events and the audit row go out with
the COMMIT in one round trip, are undone with a savepoint, and fail the commit whole."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import cast
from uuid import UUID, uuid4

import psycopg
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.conftest import Ledger
from tests.db.test_orders import Shop
from tests.db.test_transfers import transfer_cmd
from tests.ledger_checks import count
from wallet_server import services
from wallet_server.domain import AccountKind, Transaction
from wallet_server.storage import create_engine
from wallet_server.storage.repositories import EventRow

_OUTBOX_TEST_ROWS = "SELECT count(*) FROM outbox WHERE type = 'test.event'"


def _test_event(n: int) -> EventRow:
    return ("test.event", None, [], json.dumps({"n": n}))


@pytest.fixture
async def fresh_engine(database_url: str, clean_db: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """Its own pool: its connections have prepared nothing yet, so every statement travels
    with its text and the trace can name it."""
    engine = create_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()


def _trace_to(engine: AsyncEngine, path: Path) -> Callable[[], str]:
    """Write libpq's protocol trace of every connection checked out from now on to ``path``;
    the returned function stops tracing and returns the trace."""
    out = path.open("w")

    def start(dbapi: object, record: object, proxy: object) -> None:
        pgconn = dbapi.driver_connection.pgconn  # type: ignore[attr-defined]
        pgconn.trace(out.fileno())
        pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)

    def stop(dbapi: object, record: object) -> None:
        dbapi.driver_connection.pgconn.untrace()  # type: ignore[attr-defined]

    event.listen(engine.sync_engine.pool, "checkout", start)
    event.listen(engine.sync_engine.pool, "checkin", stop)

    def finish() -> str:
        event.remove(engine.sync_engine.pool, "checkout", start)
        event.remove(engine.sync_engine.pool, "checkin", stop)
        out.close()
        return path.read_text()

    return finish


def _round_trips(trace: str) -> list[str]:
    """The client's messages, cut where it waits for the server: after each Sync (extended
    protocol) and each simple Query."""
    cut = re.sub(r"^(F\t\d+\t(?:Sync|Query)\b.*)$", r"\1\n<wait>", trace, flags=re.M)
    return [
        trip
        for trip in cut.split("<wait>\n")
        if re.search(r"^F\t\d+\t(?:Sync|Query)\b", trip, flags=re.M)
    ]


def _new_call(method: str) -> None:
    services.begin_call(
        services.CallRecord(method=method, peer="test", started_at=datetime.now(UTC))
    )


async def test_a_payment_sends_its_response_events_audit_row_and_commit_in_one_round_trip(
    fresh_engine: AsyncEngine, ledger: Ledger, tmp_path: Path
) -> None:
    shop = Shop(lambda: services.UnitOfWork(fresh_engine))
    payer = await ledger.user("alice")
    account = await ledger.account(payer)
    merchant = await ledger.partner("acme")
    await ledger.deposit(merchant, account, 10_000)
    order_id = await shop.order(merchant, 250)
    _new_call("/PayOrder")

    finish = _trace_to(fresh_engine, tmp_path / "trace")
    await shop.pay(payer, order_id, account)
    trips = _round_trips(finish())

    (last,) = [trip for trip in trips if '"COMMIT"' in trip]
    assert last is trips[-1]
    for write in ("INSERT INTO outbox", "UPDATE idempotency_keys", "INSERT INTO audit_log"):
        assert write in last, f"{write} is not sent with the COMMIT"
        assert sum(write in trip for trip in trips) == 1
    # Begin, claim, savepoint, the order with its settlement account, promotions, accounts,
    # record, order saved, then the commit with its held writes.
    assert len(trips) == 9
    assert await count(fresh_engine, "SELECT count(*) FROM audit_log") == 1


async def test_an_order_takes_five_round_trips_once_its_merchant_has_a_settlement_account(
    fresh_engine: AsyncEngine, ledger: Ledger, tmp_path: Path
) -> None:
    shop = Shop(lambda: services.UnitOfWork(fresh_engine))
    merchant = await ledger.partner("acme")
    await shop.order(merchant, 250)  # the merchant's first: it makes the account
    _new_call("/CreateOrder")

    finish = _trace_to(fresh_engine, tmp_path / "trace")
    await shop.order(merchant, 250, reference="inv-2")
    trips = _round_trips(finish())

    # Begin, claim, savepoint, the order's insert (which finds the settlement account), then
    # the commit with the stored response and the audit row.
    assert len(trips) == 5
    for write in ("UPDATE idempotency_keys", "INSERT INTO audit_log", '"COMMIT"'):
        assert write in trips[-1]


async def _write_then_fail_at_commit(uow: services.UnitOfWork) -> None:
    async with uow:
        await uow.ledger.ensure_system_account(
            account_id=uuid4(), kind=AccountKind.FEES, currency="CHF"
        )
        # An account id the database cannot read: the outbox insert fails at the commit.
        unreadable = cast(UUID, "not-an-id")
        uow.events.append([_test_event(1), ("test.event", None, [unreadable], "{}")])
        await uow.commit()


async def test_a_failing_held_write_fails_the_commit_and_nothing_of_the_transaction_stays(
    clean_db: AsyncEngine,
) -> None:
    uow = services.UnitOfWork(clean_db)
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        await _write_then_fail_at_commit(uow)
    assert await count(clean_db, "SELECT count(*) FROM accounts WHERE currency = 'CHF'") == 0
    assert await count(clean_db, _OUTBOX_TEST_ROWS) == 0

    async with uow:  # the connection went back to the pool clean
        uow.events.append([_test_event(2)])
        await uow.commit()
    assert await count(clean_db, _OUTBOX_TEST_ROWS) == 1


async def _hold_then_raise(
    savepoint: contextlib.AbstractAsyncContextManager[object],
    uow: services.UnitOfWork,
    n: int,
    error: type[Exception],
) -> None:
    async with savepoint:
        uow.events.append([_test_event(n)])
        raise error


async def test_a_savepoint_undone_forgets_the_writes_held_inside_it(clean_db: AsyncEngine) -> None:
    async with services.UnitOfWork(clean_db) as uow:
        uow.events.append([_test_event(1)])
        with pytest.raises(LookupError):
            await _hold_then_raise(uow.savepoint(), uow, 2, LookupError)
        async with uow.savepoint() as savepoint:
            uow.events.append([_test_event(3)])
            await savepoint.rollback()
        async with uow.savepoint():
            uow.events.append([_test_event(4)])
        with pytest.raises(KeyError):
            await _hold_then_raise(uow.driver_savepoint(undo_on=(KeyError,)), uow, 5, KeyError)
        await uow.commit()
    async with clean_db.connect() as conn:
        written = await conn.execute(text("SELECT payload FROM outbox ORDER BY event_id"))
        assert [json.loads(payload)["n"] for (payload,) in written] == [1, 4]


async def _commit_around_the_unit_of_work(engine: AsyncEngine) -> None:
    async with services.UnitOfWork(engine) as uow:
        await uow.ledger.ensure_system_account(
            account_id=uuid4(), kind=AccountKind.FEES, currency="CHF"
        )
        uow.events.append([_test_event(1)])
        try:
            await uow.connection.commit()
        finally:
            with pytest.raises(RuntimeError, match="can only roll back"):
                await uow.commit()


async def test_a_commit_that_goes_around_the_unit_of_work_while_it_holds_writes_is_refused(
    database_url: str, clean_db: AsyncEngine
) -> None:
    one_connection = create_engine(database_url, pool_size=1)
    try:
        with pytest.raises(RuntimeError, match="commit refused"):
            await _commit_around_the_unit_of_work(one_connection)
        # Refused before it happened, and rolled back: the same pooled connection, next in
        # line, finds nothing of the transaction (an open one would show it its own rows).
        chf = "SELECT count(*) FROM accounts WHERE currency = 'CHF'"
        assert await count(one_connection, chf) == 0
        assert await count(one_connection, _OUTBOX_TEST_ROWS) == 0
        assert await count(clean_db, chf) == 0
    finally:
        await one_connection.dispose()


async def break_the_connection_then_raise(
    engine: AsyncEngine, leaving: BaseException, *, in_savepoint: bool = False
) -> None:
    """A unit of work (inside one of its savepoints, if asked) whose connection closes under
    it, as a cancellation closes it when the server cannot be told; then ``leaving`` leaves
    it, past the rollbacks that can no longer be sent."""
    async with services.UnitOfWork(engine) as uow, contextlib.AsyncExitStack() as stack:
        if in_savepoint:
            await stack.enter_async_context(uow.savepoint())
        await uow.connection.execute(text("SELECT 1"))
        await uow.driver.close()
        raise leaving


async def test_an_error_leaving_a_unit_of_work_is_not_replaced_by_a_broken_rollback(
    clean_db: AsyncEngine,
) -> None:
    with pytest.raises(LookupError):
        await break_the_connection_then_raise(clean_db, LookupError())
    assert await count(clean_db, "SELECT 1") == 1  # the broken connection left the pool


async def test_a_savepoint_sends_what_was_held_before_it_and_forgets_only_its_own(
    clean_db: AsyncEngine,
) -> None:
    async with services.UnitOfWork(clean_db) as uow:
        uow.events.append([_test_event(1)])
        with pytest.raises(LookupError):
            await _send_inside_then_raise(uow)
        await uow.commit()
    async with clean_db.connect() as conn:
        written = await conn.execute(text("SELECT payload FROM outbox ORDER BY event_id"))
        assert [json.loads(payload)["n"] for (payload,) in written] == [1]


async def _send_inside_then_raise(uow: services.UnitOfWork) -> None:
    async with uow.savepoint():
        uow.events.append([_test_event(2)])
        await uow.send_held_writes()  # 2 is sent inside the savepoint: its undo takes it
        uow.events.append([_test_event(3)])  # held: forgotten by the undo
        raise LookupError


async def test_a_transfer_group_sends_its_write_with_the_commit(
    fresh_engine: AsyncEngine, ledger: Ledger, tmp_path: Path
) -> None:
    alice = await ledger.user("alice")
    a = await ledger.account(alice)
    b = await ledger.account(await ledger.user("bob"))
    await ledger.deposit(await ledger.partner("bank"), a, 1_000)
    group = [
        services.GroupedMovement(transfer_cmd(alice, a, b, amount), None) for amount in (10, 20)
    ]

    finish = _trace_to(fresh_engine, tmp_path / "trace")
    decided = await services.movement_group(group, services.UnitOfWork(fresh_engine))
    trips = _round_trips(finish())

    assert all(isinstance(d.outcome, Transaction) for d in decided)
    # Begin; claim the keys and lock the accounts; the group's one write with the COMMIT.
    assert len(trips) == 3
    assert "INSERT INTO transactions" in trips[-1]
    assert '"COMMIT"' in trips[-1]
    assert await ledger.balance(alice, a) == 970


async def test_held_writes_sent_early_are_read_back_before_the_commit(
    clean_db: AsyncEngine,
) -> None:
    async with services.UnitOfWork(clean_db) as uow:
        uow.events.append([_test_event(1)])
        await uow.send_held_writes()
        seen = await uow.connection.execute(text(_OUTBOX_TEST_ROWS))
        assert seen.scalar_one() == 1
        assert await count(clean_db, _OUTBOX_TEST_ROWS) == 0  # not committed yet
        await uow.commit()
    assert await count(clean_db, _OUTBOX_TEST_ROWS) == 1
