"""Partner batch transfers (CreateTransfers) on the real database: per-item outcomes in
order, all-or-nothing batches, idempotency of the batch and of each item, size, concurrency.

Under the proto contract the source of every item is one of the partner's settlement
accounts, which may go negative: INSUFFICIENT_FUNDS cannot occur in a batch (the concurrency
test mixes in user-to-user transfers so that "no negative wallet" is still at stake).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.db.conftest import Ledger
from tests.ledger_checks import BALANCE, count, ledger_violations
from wallet_server import services
from wallet_server.domain import (
    AccountKind,
    EventType,
    FailedPrecondition,
    InvalidArgument,
    LedgerEvent,
    Money,
    PartnerPrincipal,
    Reason,
    TransactionKind,
    TransactionStatus,
    UserPrincipal,
)
from wallet_server.services._batch import _digests
from wallet_server.services._codec import decode_as, encode
from wallet_server.services._events import event_row
from wallet_server.services._idempotency import fingerprint, success_response
from wallet_server.storage import KeysChangedMeanwhile
from wallet_server.storage.repositories import BatchRepository

UowFactory = Callable[[], services.UnitOfWork]


async def settlement(uow: UowFactory, partner: PartnerPrincipal, currency: str = "USD") -> UUID:
    async with uow() as u:
        account_id = await u.ledger.ensure_system_account(
            account_id=uuid4(),
            kind=AccountKind.SETTLEMENT,
            currency=currency,
            partner_id=partner.partner_id,
        )
        await u.commit()
    return account_id


def item(
    source: UUID | None,
    destination: UUID | None,
    amount_minor: int,
    *,
    currency: str = "USD",
    request_id: UUID | None = None,
    memo: str = "",
) -> services.BatchTransfer:
    return services.BatchTransfer(
        request_id=request_id or uuid4(),
        from_account_id=source,
        to_account_id=destination,
        amount=Money(currency, amount_minor),
        memo=memo,
    )


def batch(
    partner: PartnerPrincipal,
    items: list[services.BatchTransfer],
    *,
    atomic: bool = False,
    request_id: UUID | None = None,
) -> services.CreateTransfers:
    return services.CreateTransfers(
        caller=partner,
        request_id=request_id or uuid4(),
        transfers=tuple(items),
        atomic=atomic,
    )


def outcome(result: services.BatchItemResult) -> str:
    if result.transaction is not None:
        return "OK"
    assert result.error is not None
    return result.error.reason


async def snapshot(engine: AsyncEngine) -> tuple[int, ...]:
    """Row counts and balances that any applied item would change."""
    return (
        await count(engine, "SELECT count(*) FROM transactions"),
        await count(engine, "SELECT count(*) FROM postings"),
        await count(engine, "SELECT count(*) FROM outbox"),
        await count(engine, "SELECT count(*) FROM idempotency_keys"),
        await count(engine, "SELECT coalesce(sum(abs(posted)), 0) FROM accounts"),
    )


async def freeze(engine: AsyncEngine, account_id: UUID, frozen: bool = True) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE accounts SET frozen = :f WHERE account_id = :a"),
            {"f": frozen, "a": account_id},
        )


class World:
    def __init__(self, ledger: Ledger, uow: UowFactory) -> None:
        self.ledger = ledger
        self.uow = uow

    async def setup(self) -> World:
        ledger = self.ledger
        self.partner = await ledger.partner("acme")
        self.other_partner = await ledger.partner("globex")
        self.s = await settlement(self.uow, self.partner)
        self.s_eur = await settlement(self.uow, self.partner, "EUR")
        self.other_s = await settlement(self.uow, self.other_partner)
        self.alice: UserPrincipal = await ledger.user("alice")
        self.bob: UserPrincipal = await ledger.user("bob")
        self.a = await ledger.account(self.alice)
        self.b = await ledger.account(self.bob)
        self.b_eur = await ledger.account(self.bob, "EUR")
        return self


@pytest.fixture
async def world(ledger: Ledger, uow: UowFactory) -> World:
    return await World(ledger, uow).setup()


async def test_each_item_gets_its_own_result_in_request_order(
    world: World, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    w = world
    carol = await w.ledger.user("carol")
    frozen = await w.ledger.account(carol)
    await freeze(clean_db, frozen)
    malformed = services.BatchTransfer(
        request_id=uuid4(),
        from_account_id=None,
        to_account_id=None,
        amount=None,
        memo="",
        invalid="amount.amount_minor: must be positive",
    )
    items = [
        item(w.s, w.a, 100, memo="payout 1"),
        item(w.s, uuid4(), 100),  # no such destination
        item(w.a, w.b, 100),  # a user account is not the partner's to spend
        item(w.other_s, w.a, 100),  # another partner's settlement account
        item(w.s, w.other_s, 100),  # only user accounts receive
        item(w.s, w.b_eur, 100),  # EUR account, USD amount
        item(w.s, frozen, 100),
        malformed,
        item(w.s, w.b, 250),
        item(w.s, w.a, 50),  # the same account again: the running balance carries on
    ]

    result = await services.create_transfers(batch(w.partner, items), uow())

    assert [r.request_id for r in result.results] == [i.request_id for i in items]
    assert [outcome(r) for r in result.results] == [
        "OK",
        Reason.NOT_FOUND,
        Reason.NOT_FOUND,
        Reason.NOT_FOUND,
        Reason.NOT_FOUND,
        Reason.CURRENCY_MISMATCH,
        Reason.ACCOUNT_FROZEN,
        Reason.INVALID_ARGUMENT,
        "OK",
        "OK",
    ]
    codes = [r.error.code for r in result.results if r.error is not None]
    assert codes == ["NOT_FOUND"] * 4 + ["FAILED_PRECONDITION"] * 2 + ["INVALID_ARGUMENT"]
    first = result.results[0].transaction
    assert first is not None
    assert (first.kind, first.status) == (TransactionKind.TRANSFER, TransactionStatus.POSTED)
    assert (first.from_account_id, first.to_account_id, first.memo) == (w.s, w.a, "payout 1")
    assert first.partner_id == w.partner.partner_id
    assert sorted(p.amount for p in first.postings) == [-100, 100]

    assert await w.ledger.balance(w.alice, w.a) == 150
    assert await w.ledger.balance(w.bob, w.b) == 250
    assert (
        await count(clean_db, f"SELECT {BALANCE} FROM accounts a WHERE account_id = :a", a=w.s)
        == -400
    )
    # Written in request order, each with its event for the user's and the partner's streams.
    posted_ids = [r.transaction.transaction_id for r in result.results if r.transaction]
    async with clean_db.connect() as conn:
        rows = await conn.execute(
            text("SELECT transaction_id FROM transactions WHERE kind = 'transfer' ORDER BY seq")
        )
        assert [row[0] for row in rows] == posted_ids
        events = await conn.execute(
            text(
                "SELECT payload::json -> 'transaction' ->> 'transaction_id', account_ids, "
                "partner_id FROM outbox WHERE type = 'transaction_created' "
                "AND payload::json -> 'transaction' ->> 'kind' = 'transfer' ORDER BY event_id"
            )
        )
        assert [(UUID(r[0]), r[1], r[2]) for r in events] == [
            (posted_ids[0], [w.a], w.partner.partner_id),
            (posted_ids[1], [w.b], w.partner.partner_id),
            (posted_ids[2], [w.a], w.partner.partner_id),
        ]
    assert await ledger_violations(clean_db) == []


async def test_event_carries_the_balance_right_after_its_own_item(
    world: World, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    w = world
    await services.create_transfers(
        batch(w.partner, [item(w.s, w.a, 100), item(w.s, w.a, 20)]), uow()
    )
    async with clean_db.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT payload::json -> 'accounts' -> 0 ->> 'posted' FROM outbox "
                "WHERE payload::json -> 'transaction' ->> 'kind' = 'transfer' ORDER BY event_id"
            )
        )
        assert [int(r[0]) for r in rows] == [100, 120]


async def test_atomic_batch_with_a_failing_item_applies_nothing(
    world: World, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    w = world
    await w.ledger.deposit(w.partner, w.a, 1_000)
    before = await snapshot(clean_db)
    good = [item(w.s, w.a, 100), item(w.s, w.b, 200)]
    bad = item(w.s, w.b_eur, 300)
    cmd = batch(w.partner, [good[0], bad, good[1]], atomic=True)

    result = await services.create_transfers(cmd, uow())

    assert [outcome(r) for r in result.results] == [
        Reason.ABORTED,
        Reason.CURRENCY_MISMATCH,
        Reason.ABORTED,
    ]
    aborted = result.results[0].error
    assert aborted is not None
    assert aborted.code == "ABORTED"
    # Only the batch's own idempotency record (and nothing else) was written.
    after = await snapshot(clean_db)
    assert after[:3] == before[:3]
    assert after[3] == before[3] + 1
    assert after[4] == before[4]
    assert await w.ledger.balance(w.alice, w.a) == 1_000
    assert await w.ledger.balance(w.bob, w.b) == 0

    # The batch replays as it was; its items were not consumed: sent again without the bad
    # one they are applied.
    assert await services.create_transfers(cmd, uow()) == result
    retry = await services.create_transfers(batch(w.partner, good, atomic=True), uow())
    assert [outcome(r) for r in retry.results] == ["OK", "OK"]
    assert await w.ledger.balance(w.alice, w.a) == 1_100
    assert await w.ledger.balance(w.bob, w.b) == 200
    assert await ledger_violations(clean_db) == []


async def test_atomic_batch_of_valid_items_applies_them_all(
    world: World, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    w = world
    result = await services.create_transfers(
        batch(
            w.partner,
            [item(w.s, w.a, 1), item(w.s, w.b, 2), item(w.s_eur, w.b_eur, 3, currency="EUR")],
            atomic=True,
        ),
        uow(),
    )
    assert [outcome(r) for r in result.results] == ["OK", "OK", "OK"]
    assert await w.ledger.balance(w.bob, w.b_eur) == 3
    assert await ledger_violations(clean_db) == []


async def test_atomic_batch_with_a_malformed_item_applies_nothing(
    world: World, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    w = world
    before = await snapshot(clean_db)
    malformed = services.BatchTransfer(
        uuid4(), w.s, None, None, "", invalid="to_account_id: required"
    )
    result = await services.create_transfers(
        batch(w.partner, [item(w.s, w.a, 5), malformed], atomic=True), uow()
    )
    assert [outcome(r) for r in result.results] == [Reason.ABORTED, Reason.INVALID_ARGUMENT]
    assert (await snapshot(clean_db))[:3] == before[:3]
    assert await w.ledger.balance(w.alice, w.a) == 0


async def test_batch_replay_returns_the_original_response_and_executes_nothing(
    world: World, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    w = world
    cmd = batch(w.partner, [item(w.s, w.a, 100), item(w.s, uuid4(), 5)])
    first = await services.create_transfers(cmd, uow())
    before = await snapshot(clean_db)

    again = await services.create_transfers(cmd, uow())

    assert again == first
    assert await snapshot(clean_db) == before
    assert await w.ledger.balance(w.alice, w.a) == 100

    changed = services.CreateTransfers(
        caller=w.partner, request_id=cmd.request_id, transfers=cmd.transfers, atomic=True
    )
    with pytest.raises(FailedPrecondition) as caught:
        await services.create_transfers(changed, uow())
    assert caught.value.reason == Reason.IDEMPOTENCY_KEY_REUSED
    assert await snapshot(clean_db) == before


async def test_a_batch_replay_rebuilds_every_kind_of_item_outcome(
    world: World, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    """Outcomes stored under the items' own keys in the batch's transaction are read from
    there; the others (malformed items, items replayed from earlier calls, a failed atomic
    batch's items) are kept in the batch's record."""
    w = world
    earlier = item(w.s, w.b, 9)
    await services.create_transfers(batch(w.partner, [earlier]), uow())
    malformed = services.BatchTransfer(uuid4(), None, None, None, "", invalid="bad amount")
    paid, refused = item(w.s, w.a, 100), item(w.s, uuid4(), 5)
    cmd = batch(w.partner, [paid, malformed, earlier, refused])
    failed = batch(w.partner, [item(w.s, w.a, 1), item(w.s, uuid4(), 2), malformed], atomic=True)
    first = await services.create_transfers(cmd, uow())
    first_failed = await services.create_transfers(failed, uow())
    before = await snapshot(clean_db)

    assert await services.create_transfers(cmd, uow()) == first
    assert await services.create_transfers(failed, uow()) == first_failed
    assert [outcome(r) for r in first.results] == [
        "OK",
        Reason.INVALID_ARGUMENT,
        "OK",
        Reason.NOT_FOUND,
    ]
    assert [outcome(r) for r in first_failed.results] == [
        Reason.ABORTED,
        Reason.NOT_FOUND,
        Reason.INVALID_ARGUMENT,
    ]
    assert await snapshot(clean_db) == before
    async with clean_db.connect() as conn:
        records = {
            row[0]: [sorted(entry) for entry in row[1]["batch"]]
            for row in await conn.execute(
                text(
                    "SELECT request_id, response::json AS response FROM idempotency_keys "
                    "WHERE request_id IN (:a, :b)"
                ),
                {"a": cmd.request_id, "b": failed.request_id},
            )
        }
    reference, whole = ["request_id"], ["error", "request_id", "transaction"]
    assert records == {
        cmd.request_id: [reference, whole, whole, reference],
        failed.request_id: [whole, whole, whole],
    }


async def test_a_batch_recorded_whole_still_replays(
    world: World, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    """Records written before batches pointed to their items' keys hold the whole result."""
    w = world
    cmd = batch(w.partner, [item(w.s, w.a, 100), item(w.s, uuid4(), 5)])
    first = await services.create_transfers(cmd, uow())
    async with clean_db.begin() as conn:
        await conn.execute(
            text("UPDATE idempotency_keys SET response = :r WHERE request_id = :k"),
            {"r": success_response(first), "k": cmd.request_id},
        )
        await conn.execute(
            text("DELETE FROM idempotency_keys WHERE request_id = ANY(:items)"),
            {"items": [i.request_id for i in cmd.transfers]},
        )
    before = await snapshot(clean_db)

    assert await services.create_transfers(cmd, uow()) == first
    assert await snapshot(clean_db) == before


async def test_item_keys_not_stored_with_their_batch_are_reported_as_changed(
    world: World, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    """Keys stored together are purged together. An item key missing while its batch's key
    is there, or stored again by a later call, means a purge in between: the call must run
    again rather than take that record for the batch's."""
    w = world
    items = [item(w.s, w.a, 100), item(w.s, w.b, 5)]
    cmd = batch(w.partner, items)
    await services.create_transfers(cmd, uow())
    ids = [i.request_id for i in items]

    async def read(request_ids: list[UUID]) -> dict[UUID, Any]:
        async with uow() as u:
            store = await u.batches()
            return await store.stored_with_batch(
                principal=w.partner.key, batch_request_id=cmd.request_id, request_ids=request_ids
            )

    assert set(await read(ids)) == set(ids)
    with pytest.raises(KeysChangedMeanwhile):
        await read([*ids, uuid4()])
    async with clean_db.begin() as conn:  # purged, then used again by a later call
        await conn.execute(
            text(
                "UPDATE idempotency_keys SET created_at = created_at + interval '1 second' "
                "WHERE request_id = :r"
            ),
            {"r": ids[1]},
        )
    with pytest.raises(KeysChangedMeanwhile):
        await read(ids)


async def test_a_batch_failing_before_its_documents_leaves_nothing_behind(
    world: World, uow: UowFactory, clean_db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while the ledger statement is prepared, before the documents are made,
    rolls everything back (and leaves no unfinished coroutine: warnings are errors here)."""
    w = world
    before = await snapshot(clean_db)

    def failing_params(*args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(
        "wallet_server.storage.repositories._batch_writes.record_params", failing_params
    )
    with pytest.raises(RuntimeError, match="boom"):
        await services.create_transfers(batch(w.partner, [item(w.s, w.a, 100)]), uow())
    assert await snapshot(clean_db) == before


async def test_items_replay_their_original_outcome_in_later_batches(
    world: World, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    w = world
    carol = await w.ledger.user("carol")
    c = await w.ledger.account(carol)
    await freeze(clean_db, c)
    paid, refused = item(w.s, w.a, 100), item(w.s, c, 100)
    first = await services.create_transfers(batch(w.partner, [paid, refused]), uow())
    await freeze(clean_db, c, frozen=False)

    fresh = item(w.s, w.b, 7)
    second = await services.create_transfers(batch(w.partner, [refused, fresh, paid]), uow())
    reused = item(w.s, w.b, 999, request_id=paid.request_id)  # same key, other payload
    third = await services.create_transfers(batch(w.partner, [reused, item(w.s, w.b, 1)]), uow())

    replayed_refusal, new, replayed_payment = second.results
    # A refusal is remembered even though the account was unfrozen since.
    assert replayed_refusal == first.results[1]
    assert replayed_refusal.error is not None
    assert replayed_refusal.error.reason == Reason.ACCOUNT_FROZEN
    assert replayed_payment == first.results[0]
    assert outcome(new) == "OK"
    clash, other = third.results
    assert clash.error is not None
    assert (clash.error.reason, clash.error.code) == (
        Reason.IDEMPOTENCY_KEY_REUSED,
        "FAILED_PRECONDITION",
    )
    assert outcome(other) == "OK"
    assert await w.ledger.balance(w.alice, w.a) == 100
    assert await w.ledger.balance(carol, c) == 0
    assert await w.ledger.balance(w.bob, w.b) == 8
    assert await count(clean_db, "SELECT count(*) FROM transactions WHERE kind = 'transfer'") == 3

    # Item keys share the partner's key space with its other calls.
    deposit_key = uuid4()
    await services.deposit(
        services.Deposit(w.partner, deposit_key, w.a, Money("USD", 1), "ref"), uow()
    )
    fourth = await services.create_transfers(
        batch(w.partner, [item(w.s, w.a, 1, request_id=deposit_key)]), uow()
    )
    assert outcome(fourth.results[0]) == Reason.IDEMPOTENCY_KEY_REUSED
    # Another partner has its own key space.
    own = await services.create_transfers(
        batch(w.other_partner, [item(w.other_s, w.a, 3, request_id=paid.request_id)]), uow()
    )
    assert outcome(own.results[0]) == "OK"
    assert await ledger_violations(clean_db) == []


async def test_a_thousand_item_batch(world: World, uow: UowFactory, clean_db: AsyncEngine) -> None:
    w = world
    accounts = [w.a, w.b]
    for i in range(8):
        accounts.append(await w.ledger.account(await w.ledger.user(f"user{i}")))
    items = [item(w.s, accounts[i % 10], 1 + i % 7) for i in range(1000)]

    result = await services.create_transfers(batch(w.partner, items), uow())

    assert [outcome(r) for r in result.results] == ["OK"] * 1000
    assert (
        await count(clean_db, "SELECT count(*) FROM transactions WHERE kind = 'transfer'") == 1000
    )
    assert await count(clean_db, "SELECT count(*) FROM outbox WHERE partner_id IS NOT NULL") >= 1000
    expected = sum(1 + i % 7 for i in range(1000) if i % 10 == 0)
    assert await w.ledger.balance(w.alice, w.a) == expected
    total = sum(1 + i % 7 for i in range(1000))
    assert (
        await count(clean_db, f"SELECT {BALANCE} FROM accounts a WHERE account_id = :a", a=w.s)
        == -total
    )
    assert await ledger_violations(clean_db) == []


async def test_a_failure_while_the_ledger_rows_are_written_leaves_nothing(
    world: World, clean_db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The documents are serialized while the database writes the batch's transactions. A
    failure there (a bug) waits for that statement, rolls everything back, and the one pooled
    connection serves the retry."""
    w = world
    items = [item(w.s, (w.a, w.b)[i % 2], 1) for i in range(300)]
    cmd = batch(w.partner, items)
    before = await snapshot(clean_db)
    calls = 0

    def failing_event_row(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 250:  # after the documents have yielded to the loop twice
            raise RuntimeError("boom")
        return event_row(*args, **kwargs)

    monkeypatch.setattr("wallet_server.services._batch.event_row", failing_event_row)
    engine = create_async_engine(clean_db.url, pool_size=1, max_overflow=0)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            await services.create_transfers(cmd, services.UnitOfWork(engine))
        assert await snapshot(clean_db) == before
        async with asyncio.timeout(10):
            result = await services.create_transfers(cmd, services.UnitOfWork(engine))
    finally:
        await engine.dispose()
    assert [outcome(r) for r in result.results] == ["OK"] * 300
    assert await w.ledger.balance(w.alice, w.a) == 150
    assert await ledger_violations(clean_db) == []


async def test_a_call_cancelled_while_its_ledger_rows_fail_stays_cancelled(
    world: World,
    clean_db: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Cancelled while serializing, and the ledger statement then fails with a conflict: the
    call ends cancelled with nothing applied, not retried and committed, and the conflict
    is not logged as an error the driver ignored."""
    w = world
    items = [item(w.s, (w.a, w.b)[i % 2], 1) for i in range(150)]
    before = await snapshot(clean_db)
    real_record_and_write = BatchRepository.record_and_write
    attempts = 0

    async def counted(self: BatchRepository, **kwargs: Any) -> None:
        nonlocal attempts
        attempts += 1
        await real_record_and_write(self, **kwargs)

    call: asyncio.Task[services.BatchResult] | None = None
    rows = 0

    def cancelling_event_row(*args: Any, **kwargs: Any) -> Any:
        nonlocal rows
        rows += 1
        if rows == 50:  # the cancellation arrives when the documents next yield
            assert call is not None
            call.cancel()
        return event_row(*args, **kwargs)

    monkeypatch.setattr(BatchRepository, "record_and_write", counted)
    monkeypatch.setattr("wallet_server.services._batch.event_row", cancelling_event_row)
    async with _deadlocks_on_transfers(clean_db, times=2):
        call = asyncio.ensure_future(
            services.create_transfers(batch(w.partner, items), services.UnitOfWork(clean_db))
        )
        with pytest.raises(asyncio.CancelledError):
            await call
    assert attempts == 1
    assert await snapshot(clean_db) == before
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_ledger_statement_conflict_runs_the_batch_again(
    world: World, uow: UowFactory, clean_db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conflict of the ledger statement is raised once the documents are written and the
    pipeline drained; the batch runs again and applies once."""
    w = world
    items = [item(w.s, (w.a, w.b)[i % 2], 1) for i in range(150)]
    real_record_and_write = BatchRepository.record_and_write
    attempts = 0

    async def counted(self: BatchRepository, **kwargs: Any) -> None:
        nonlocal attempts
        attempts += 1
        await real_record_and_write(self, **kwargs)

    monkeypatch.setattr(BatchRepository, "record_and_write", counted)
    async with _deadlocks_on_transfers(clean_db, times=1):
        result = await services.create_transfers(batch(w.partner, items), uow())

    assert attempts == 2
    assert [outcome(r) for r in result.results] == ["OK"] * 150
    assert await w.ledger.balance(w.alice, w.a) == 75
    assert await ledger_violations(clean_db) == []


@contextlib.asynccontextmanager
async def _deadlocks_on_transfers(engine: AsyncEngine, *, times: int) -> AsyncIterator[None]:
    """The first ``times`` inserts into transactions fail as a deadlock would (SQLSTATE
    40P01); a sequence counts them, as it is not rolled back with them."""
    async with engine.begin() as conn:
        await conn.execute(text("CREATE SEQUENCE test_deadlocks"))
        await conn.execute(
            text(
                "CREATE FUNCTION test_deadlock() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN IF nextval('test_deadlocks') <= {times} THEN "
                "RAISE EXCEPTION 'deadlock detected' USING ERRCODE = 'deadlock_detected'; "
                "END IF; RETURN NULL; END $$"
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER test_deadlock BEFORE INSERT ON transactions "
                "FOR EACH STATEMENT EXECUTE FUNCTION test_deadlock()"
            )
        )
    try:
        yield
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER test_deadlock ON transactions"))
            await conn.execute(text("DROP FUNCTION test_deadlock()"))
            await conn.execute(text("DROP SEQUENCE test_deadlocks"))


@pytest.mark.parametrize(
    ("size", "duplicate", "field"),
    [
        (0, False, "transfers"),
        (1001, False, "transfers"),
        (3, True, "transfers[2].request_id"),
    ],
)
async def test_call_level_errors_change_nothing(
    world: World,
    uow: UowFactory,
    clean_db: AsyncEngine,
    size: int,
    duplicate: bool,
    field: str,
) -> None:
    w = world
    items = [item(w.s, w.a, 1) for _ in range(size)]
    if duplicate:
        items[2] = item(w.s, w.b, 2, request_id=items[0].request_id)
    before = await snapshot(clean_db)

    with pytest.raises(InvalidArgument) as caught:
        await services.create_transfers(batch(w.partner, items), uow())

    assert caught.value.reason == Reason.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == [field]
    assert await snapshot(clean_db) == before


async def test_item_key_equal_to_the_batch_key_is_refused(
    world: World, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    w = world
    key = uuid4()
    with pytest.raises(InvalidArgument) as caught:
        await services.create_transfers(
            batch(w.partner, [item(w.s, w.a, 1, request_id=key)], request_id=key), uow()
        )
    assert [v.field for v in caught.value.violations] == ["transfers[0].request_id"]
    assert await count(clean_db, "SELECT count(*) FROM transactions") == 0


async def test_concurrent_batches_and_transfers_on_overlapping_accounts(
    world: World, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    w = world
    users = [(w.alice, w.a), (w.bob, w.b)]
    for i in range(3):
        user = await w.ledger.user(f"user{i}")
        users.append((user, await w.ledger.account(user)))
    accounts = [a for _, a in users]
    rng = random.Random(4)
    batches = [
        batch(
            w.partner,
            [item(w.s, rng.choice(accounts), rng.randint(1, 50)) for _ in range(60)],
            atomic=n % 3 == 0,
        )
        for n in range(12)
    ]
    replayed = batches[1]  # sent three times concurrently: executed once

    async def user_transfer(n: int) -> str:
        (caller, source), (_, destination) = rng.sample(users, 2)
        try:
            await services.transfer(
                services.Transfer(
                    caller=caller,
                    request_id=uuid4(),
                    from_account_id=source,
                    to_account_id=destination,
                    to_username=None,
                    amount=Money("USD", rng.randint(1, 400)),
                    memo="",
                ),
                uow(),
            )
        except FailedPrecondition as exc:
            return str(exc.reason)
        return "OK"

    calls = [services.create_transfers(b, uow()) for b in batches]
    calls += [services.create_transfers(replayed, uow()) for _ in range(2)]
    outcomes = await asyncio.gather(*calls, *(user_transfer(n) for n in range(40)))

    results = [r for r in outcomes[: len(batches) + 2] if isinstance(r, services.BatchResult)]
    assert len(results) == len(batches) + 2
    assert results[len(batches)] == results[1] == results[len(batches) + 1]
    transfers = outcomes[len(batches) + 2 :]
    assert set(transfers) <= {"OK", Reason.INSUFFICIENT_FUNDS}
    paid_in = sum(i.amount.amount_minor for b in batches for i in b.transfers if i.amount)
    assert all(outcome(r) == "OK" for res in results for r in res.results)
    assert (
        await count(clean_db, f"SELECT {BALANCE} FROM accounts a WHERE account_id = :a", a=w.s)
        == -paid_in
    )
    assert await count(clean_db, "SELECT sum(posted) FROM accounts WHERE kind = 'user'") == paid_in
    assert await count(
        clean_db, "SELECT count(*) FROM transactions WHERE partner_id IS NOT NULL"
    ) == sum(len(b.transfers) for b in batches)
    assert await ledger_violations(clean_db) == []


async def test_an_item_sent_in_concurrent_batches_is_applied_once(
    world: World, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    w = world
    shared = item(w.s, w.a, 40)
    batches = [batch(w.partner, [item(w.s, w.b, 1), shared]) for _ in range(10)]

    results = await asyncio.gather(*(services.create_transfers(b, uow()) for b in batches))

    assert all(outcome(r) == "OK" for res in results for r in res.results)
    shared_ids = set()
    for res in results:
        tx = res.results[1].transaction
        assert tx is not None
        shared_ids.add(tx.transaction_id)
    assert len(shared_ids) == 1
    assert await w.ledger.balance(w.alice, w.a) == 40
    assert await w.ledger.balance(w.bob, w.b) == 10
    assert await ledger_violations(clean_db) == []


async def test_a_key_sent_at_once_in_a_batch_and_in_a_single_call_applies_once(
    world: World, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    """A batch locks its accounts before it stores its keys, a single call the other way
    round: the two can deadlock on one key. Whichever runs, the key moves money once, and
    the other call reports the key as used for a different request."""
    w = world
    for _ in range(4):
        key = uuid4()
        deposit = services.Deposit(w.partner, key, w.a, Money("USD", 10), "ref")
        cmd = batch(w.partner, [item(w.s, w.b, 1), item(w.s, w.a, 10, request_id=key)])
        single, batched = await asyncio.gather(
            services.deposit(deposit, uow()),
            services.create_transfers(cmd, uow()),
            return_exceptions=True,
        )
        assert isinstance(batched, services.BatchResult)
        if isinstance(single, FailedPrecondition):
            assert single.reason == Reason.IDEMPOTENCY_KEY_REUSED
            assert outcome(batched.results[1]) == "OK"
        else:
            assert outcome(batched.results[1]) == Reason.IDEMPOTENCY_KEY_REUSED
    assert await w.ledger.balance(w.alice, w.a) == 40
    assert await w.ledger.balance(w.bob, w.b) == 4
    assert await ledger_violations(clean_db) == []


async def test_stored_responses_and_events_have_the_single_call_format(
    world: World, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    """What a batch stores for its items and its events is what single calls store (the
    generic encoding); its own record points to its items' keys."""
    w = world
    memo = 'quotes " and \\ and ünïcode'
    items = [
        item(w.s, w.a, 100, memo=memo),
        item(w.s, uuid4(), 100),  # refused: remembered
        item(w.s, w.b, 250),
    ]
    cmd = batch(w.partner, items)
    result = await services.create_transfers(cmd, uow())

    async with clean_db.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT request_id, response::json AS response FROM idempotency_keys "
                "WHERE principal = :p"
            ),
            {"p": w.partner.key},
        )
        stored = {row[0]: row[1] for row in rows}
        payloads = [
            row[0]
            for row in await conn.execute(
                text(
                    "SELECT payload::json AS payload FROM outbox "
                    "WHERE payload::json -> 'transaction' ->> 'kind' = 'transfer' ORDER BY event_id"
                )
            )
        ]
    assert stored[cmd.request_id] == {"batch": [{"request_id": str(i.request_id)} for i in items]}
    first, refused, third = result.results
    assert first.transaction is not None
    assert third.transaction is not None
    assert first.transaction.memo == memo
    assert stored[items[0].request_id] == {"result": encode(first.transaction)}
    assert refused.error is not None
    assert stored[items[1].request_id] == {
        "error": {
            "status": refused.error.code,
            "reason": refused.error.reason,
            "message": refused.error.message,
        }
    }
    assert stored[items[2].request_id] == {"result": encode(third.transaction)}
    events = [decode_as(LedgerEvent, p) for p in payloads]
    assert [encode(e) for e in events] == payloads
    assert [(e.type, e.transaction) for e in events] == [
        (EventType.TRANSACTION_CREATED, first.transaction),
        (EventType.TRANSACTION_CREATED, third.transaction),
    ]


def test_batch_and_item_fingerprints_match_the_generic_ones() -> None:
    """The batch spells its items' canonical JSON itself; the bytes must be the generic ones,
    or a retry after an upgrade would be refused as a different request."""
    partner = PartnerPrincipal(partner_id=uuid4(), name="acme", scopes=frozenset())
    malformed = services.BatchTransfer(uuid4(), None, None, None, "", invalid='bad "amount"')
    rng = random.Random(7)
    memos = ['ü " \\', "\x00\x1f\x7f", "\ud800 lone", "emoji \U0001f600", "", "/<>&'"]
    items = [item(uuid4(), uuid4(), 5, memo='ü " \\'), malformed, item(uuid4(), None, 7)]
    items += [
        item(
            uuid4(),
            uuid4(),
            rng.randrange(1, 2**62),
            currency=rng.choice(["USD", "EUR", "JPY"]),
            memo=memo,
        )
        for memo in memos
    ]
    for atomic in (False, True):
        cmd = batch(partner, items, atomic=atomic)
        assert _digests(cmd) == (
            fingerprint("CreateTransfers", cmd),
            {i.request_id: fingerprint("CreateTransfers/item", i) for i in items if not i.invalid},
        )
