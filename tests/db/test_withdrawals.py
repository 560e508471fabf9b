"""Withdrawals on the real database: hold, complete, fail, routing, sealing, races, replays."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.conftest import Ledger
from tests.ledger_checks import ACCOUNT_BALANCES, BALANCE, count, ledger_violations
from wallet_server import services
from wallet_server.domain import (
    SCOPE_DEPOSIT,
    SCOPE_PAYOUTS,
    FailedPrecondition,
    Money,
    NotFound,
    PartnerPrincipal,
    PayoutDestination,
    Reason,
    Transaction,
    TransactionKind,
    TransactionStatus,
    UserPrincipal,
    WalletError,
)
from wallet_server.security import SecretBox, SecretBoxError

BOX = SecretBox({"s1": b"\x01" * 32}, "s1")
ACCOUNT_NUMBER = "DE89370400440532013000"
DESTINATION = PayoutDestination(
    holder_name="Alice Example", country_code="DE", bank_code="", account_number=ACCOUNT_NUMBER
)

UowFactory = Callable[[], services.UnitOfWork]


async def request(
    uow: UowFactory,
    caller: UserPrincipal,
    account_id: UUID,
    amount_minor: int,
    *,
    currency: str = "USD",
    request_id: UUID | None = None,
    destination: PayoutDestination = DESTINATION,
) -> Transaction:
    return await services.request_withdrawal(
        services.RequestWithdrawal(
            caller=caller,
            request_id=request_id or uuid4(),
            account_id=account_id,
            amount=Money(currency, amount_minor),
            destination=destination,
        ),
        uow(),
        BOX,
    )


async def complete(
    uow: UowFactory,
    partner: PartnerPrincipal,
    tx_id: UUID,
    *,
    reference: str = "wire-1",
    request_id: UUID | None = None,
) -> Transaction:
    return await services.complete_withdrawal(
        services.CompleteWithdrawal(
            caller=partner,
            request_id=request_id or uuid4(),
            transaction_id=tx_id,
            external_reference=reference,
        ),
        uow(),
    )


async def fail(
    uow: UowFactory,
    partner: PartnerPrincipal,
    tx_id: UUID,
    *,
    message: str = "account closed",
    request_id: UUID | None = None,
) -> Transaction:
    return await services.fail_withdrawal(
        services.FailWithdrawal(
            caller=partner,
            request_id=request_id or uuid4(),
            transaction_id=tx_id,
            failure_message=message,
        ),
        uow(),
    )


async def balances(engine: AsyncEngine, account_id: UUID) -> tuple[int, int]:
    """(posted, pending_out) straight from the table."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    f"SELECT {BALANCE} AS posted, pending_out FROM accounts a WHERE account_id = :a"
                ),
                {"a": account_id},
            )
        ).one()
    return int(row.posted), int(row.pending_out)


async def snapshot(engine: AsyncEngine) -> dict[str, Any]:
    """Everything a refused call must leave alone."""
    async with engine.connect() as conn:

        async def rows(query: str) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in await conn.execute(text(query))]

        return {
            "accounts": await rows(ACCOUNT_BALANCES),
            "transactions": await rows(
                "SELECT transaction_id, status, external_reference, status_message, posted_at "
                "FROM transactions ORDER BY transaction_id"
            ),
            "postings": await rows("SELECT count(*) FROM postings"),
            "withdrawals": await rows("SELECT transaction_id FROM withdrawals"),
            "outbox": await rows("SELECT count(*) FROM outbox"),
        }


async def settlement_of(engine: AsyncEngine, partner_id: UUID, currency: str = "USD") -> UUID:
    async with engine.connect() as conn:
        found: UUID = (
            await conn.execute(
                text(
                    "SELECT account_id FROM accounts "
                    "WHERE kind = 'settlement' AND partner_id = :p AND currency = :c"
                ),
                {"p": partner_id, "c": currency},
            )
        ).scalar_one()
    return found


async def events(engine: AsyncEngine, tx_id: UUID) -> list[tuple[str, UUID | None]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT type, partner_id FROM outbox "
                "WHERE payload::json->'transaction'->>'transaction_id' = :t ORDER BY event_id"
            ),
            {"t": str(tx_id)},
        )
        return [(r.type, r.partner_id) for r in result]


@pytest.fixture
async def funded(ledger: Ledger) -> tuple[UserPrincipal, UUID, PartnerPrincipal]:
    """alice with USD 100.00; the partner (all scopes) that deposited it is the payout partner."""
    alice = await ledger.user("alice")
    account = await ledger.account(alice)
    partner = await ledger.partner("payer")
    await ledger.deposit(partner, account, 10_000)
    return alice, account, partner


# --- the request: a hold, routed and sealed -------------------------------------------------


async def test_a_request_holds_the_amount_without_posting_it(
    funded: tuple[UserPrincipal, UUID, PartnerPrincipal],
    uow: UowFactory,
    ledger: Ledger,
    clean_db: AsyncEngine,
) -> None:
    alice, account, partner = funded

    tx = await request(uow, alice, account, 2_500)

    assert tx.kind is TransactionKind.WITHDRAWAL
    assert tx.status is TransactionStatus.PENDING
    assert tx.postings == ()
    assert tx.posted_at is None
    assert tx.partner_id == partner.partner_id
    assert tx.from_account_id == account
    assert tx.to_account_id == await settlement_of(clean_db, partner.partner_id)
    assert await balances(clean_db, account) == (10_000, 2_500)  # posted unchanged
    assert await ledger.balance(alice, account) == 7_500  # available dropped
    postings = "SELECT count(*) FROM postings WHERE transaction_id = :t"
    assert await count(clean_db, postings, t=tx.transaction_id) == 0
    assert await events(clean_db, tx.transaction_id) == [
        ("transaction_created", partner.partner_id)
    ]
    assert await ledger_violations(clean_db) == []


async def test_held_money_cannot_be_spent_twice(
    funded: tuple[UserPrincipal, UUID, PartnerPrincipal], uow: UowFactory, ledger: Ledger
) -> None:
    alice, account, _ = funded
    bob = await ledger.user("bob")
    bob_account = await ledger.account(bob)
    await request(uow, alice, account, 8_000)

    with pytest.raises(FailedPrecondition) as caught:
        await services.transfer(
            services.Transfer(
                caller=alice,
                request_id=uuid4(),
                from_account_id=account,
                to_account_id=bob_account,
                to_username=None,
                amount=Money("USD", 2_001),
                memo="",
            ),
            uow(),
        )
    assert caught.value.reason == Reason.INSUFFICIENT_FUNDS
    with pytest.raises(FailedPrecondition) as caught:
        await request(uow, alice, account, 2_001)
    assert caught.value.reason == Reason.INSUFFICIENT_FUNDS
    await request(uow, alice, account, 2_000)  # exactly what is left
    assert await ledger.balance(alice, account) == 0


async def test_the_destination_is_stored_sealed_and_opens_only_for_its_partner(
    funded: tuple[UserPrincipal, UUID, PartnerPrincipal],
    uow: UowFactory,
    ledger: Ledger,
    clean_db: AsyncEngine,
) -> None:
    alice, account, partner = funded
    other = await ledger.partner("other")
    tx = await request(uow, alice, account, 1_000)
    second = await request(uow, alice, account, 1_000)

    async with clean_db.connect() as conn:
        stored = {
            r.transaction_id: bytes(r.destination)
            for r in await conn.execute(text("SELECT transaction_id, destination FROM withdrawals"))
        }
    blob = stored[tx.transaction_id]
    assert ACCOUNT_NUMBER.encode() not in blob
    assert ACCOUNT_NUMBER[-10:].encode() not in blob
    assert b"Alice Example" not in blob
    assert services.open_destination(BOX, tx.transaction_id, blob) == DESTINATION

    async with uow() as u:
        assert (
            await services.payout_destination(u, BOX, tx.transaction_id, partner.partner_id)
            == DESTINATION
        )
        assert (
            await services.payout_destination(u, BOX, tx.transaction_id, other.partner_id) is None
        )
        assert await services.payout_destination(u, BOX, uuid4(), partner.partner_id) is None
        both = await services.payout_destinations(
            u, BOX, partner.partner_id, [tx.transaction_id, second.transaction_id]
        )
        assert set(both) == {tx.transaction_id, second.transaction_id}

    # Bound to its withdrawal: the same blob does not open as another one's.
    with pytest.raises(SecretBoxError):
        services.open_destination(BOX, second.transaction_id, blob)
    # Keys rotate: a ring with a new active key still opens blobs sealed under the old one.
    rotated = SecretBox({"s1": b"\x01" * 32, "s2": b"\x02" * 32}, "s2")
    assert services.open_destination(rotated, tx.transaction_id, blob) == DESTINATION
    with pytest.raises(SecretBoxError):
        services.open_destination(SecretBox({"s2": b"\x02" * 32}, "s2"), tx.transaction_id, blob)


async def test_no_secret_reaches_any_other_table(
    funded: tuple[UserPrincipal, UUID, PartnerPrincipal], uow: UowFactory, clean_db: AsyncEngine
) -> None:
    alice, account, _ = funded
    await request(uow, alice, account, 1_000)
    async with clean_db.connect() as conn:
        tables = [
            r[0]
            for r in await conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            )
        ]
        for table in tables:
            if table == "withdrawals":
                continue
            dump = await conn.execute(text(f'SELECT t::text FROM "{table}" AS t'))
            for (row,) in dump:
                assert ACCOUNT_NUMBER not in row, table
                assert "Alice Example" not in row, table


# --- routing --------------------------------------------------------------------------------


async def test_withdrawals_go_to_the_first_registered_active_payout_partner(
    ledger: Ledger, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    alice = await ledger.user("alice")
    account = await ledger.account(alice)
    depositor_id = await services.register_partner(uow(), "depositor", [SCOPE_DEPOSIT])
    depositor = PartnerPrincipal(depositor_id, "depositor", frozenset({SCOPE_DEPOSIT}))
    await ledger.deposit(depositor, account, 10_000)
    first = await services.register_partner(uow(), "first", [SCOPE_PAYOUTS])
    second = await services.register_partner(uow(), "second", [SCOPE_PAYOUTS, SCOPE_DEPOSIT])

    assert (await request(uow, alice, account, 100)).partner_id == first
    async with clean_db.begin() as conn:
        await conn.execute(
            text("UPDATE partners SET revoked_at = now() WHERE partner_id = :p"), {"p": first}
        )
    assert (await request(uow, alice, account, 100)).partner_id == second


async def test_without_a_payout_partner_the_request_is_refused_and_nothing_is_held(
    ledger: Ledger, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    alice = await ledger.user("alice")
    account = await ledger.account(alice)
    depositor_id = await services.register_partner(uow(), "depositor", [SCOPE_DEPOSIT])
    depositor = PartnerPrincipal(depositor_id, "depositor", frozenset({SCOPE_DEPOSIT}))
    await ledger.deposit(depositor, account, 10_000)
    before = await snapshot(clean_db)

    with pytest.raises(FailedPrecondition) as caught:
        await request(uow, alice, account, 100)

    assert caught.value.reason == "FAILED_PRECONDITION"
    assert await snapshot(clean_db) == before


# --- refusals of the request ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "amount", "currency", "reason"),
    [
        ("", 10_001, "USD", Reason.INSUFFICIENT_FUNDS),
        ("frozen", 100, "USD", Reason.ACCOUNT_FROZEN),
        ("", 100, "EUR", Reason.CURRENCY_MISMATCH),
    ],
)
async def test_refused_requests_change_nothing_and_replay_the_refusal(
    funded: tuple[UserPrincipal, UUID, PartnerPrincipal],
    uow: UowFactory,
    clean_db: AsyncEngine,
    setup: str,
    amount: int,
    currency: str,
    reason: Reason,
) -> None:
    alice, account, _ = funded
    if setup == "frozen":
        async with clean_db.begin() as conn:
            await conn.execute(
                text("UPDATE accounts SET frozen = true WHERE account_id = :a"), {"a": account}
            )
    before = await snapshot(clean_db)
    request_id = uuid4()

    for _ in range(2):  # the replay answers the same
        with pytest.raises(FailedPrecondition) as caught:
            await request(uow, alice, account, amount, currency=currency, request_id=request_id)
        assert caught.value.reason == reason

    assert await snapshot(clean_db) == before
    assert await ledger_violations(clean_db) == []


async def test_another_users_account_is_not_found(
    funded: tuple[UserPrincipal, UUID, PartnerPrincipal],
    uow: UowFactory,
    ledger: Ledger,
    clean_db: AsyncEngine,
) -> None:
    _, account, _ = funded
    mallory = await ledger.user("mallory")
    before = await snapshot(clean_db)
    for target in (account, uuid4()):
        with pytest.raises(NotFound):
            await request(uow, mallory, target, 100)
    assert await snapshot(clean_db) == before


# --- completion and failure -----------------------------------------------------------------


async def test_completion_posts_to_the_settlement_account_and_releases_the_hold(
    funded: tuple[UserPrincipal, UUID, PartnerPrincipal],
    uow: UowFactory,
    ledger: Ledger,
    clean_db: AsyncEngine,
) -> None:
    alice, account, partner = funded
    settlement = await settlement_of(clean_db, partner.partner_id)
    settlement_before = (await balances(clean_db, settlement))[0]
    tx = await request(uow, alice, account, 2_500)

    done = await complete(uow, partner, tx.transaction_id, reference="wire-77")

    assert done.transaction_id == tx.transaction_id
    assert done.status is TransactionStatus.POSTED
    assert done.external_reference == "wire-77"
    assert done.posted_at is not None
    assert {(p.account_id, p.amount) for p in done.postings} == {
        (account, -2_500),
        (settlement, 2_500),
    }
    assert await balances(clean_db, account) == (7_500, 0)
    assert await ledger.balance(alice, account) == 7_500
    assert await balances(clean_db, settlement) == (settlement_before + 2_500, 0)
    stored = await services.get_transaction(
        services.GetTransaction(caller=alice, transaction_id=tx.transaction_id), uow()
    )
    assert stored == done
    assert await events(clean_db, tx.transaction_id) == [
        ("transaction_created", partner.partner_id),
        ("transaction_status_changed", partner.partner_id),
    ]
    assert await ledger_violations(clean_db) == []


async def test_failure_voids_and_releases_the_hold(
    funded: tuple[UserPrincipal, UUID, PartnerPrincipal],
    uow: UowFactory,
    ledger: Ledger,
    clean_db: AsyncEngine,
) -> None:
    alice, account, partner = funded
    tx = await request(uow, alice, account, 2_500)
    postings_before = await count(clean_db, "SELECT count(*) FROM postings")

    failed = await fail(uow, partner, tx.transaction_id, message="beneficiary account closed")

    assert failed.status is TransactionStatus.VOIDED
    assert failed.status_message == "beneficiary account closed"
    assert failed.postings == ()
    assert failed.posted_at is None
    assert await balances(clean_db, account) == (10_000, 0)
    assert await ledger.balance(alice, account) == 10_000
    assert await count(clean_db, "SELECT count(*) FROM postings") == postings_before
    stored = await services.get_transaction(
        services.GetTransaction(caller=alice, transaction_id=tx.transaction_id), uow()
    )
    assert stored == failed
    assert [e[0] for e in await events(clean_db, tx.transaction_id)] == [
        "transaction_created",
        "transaction_status_changed",
    ]
    assert await ledger_violations(clean_db) == []


@pytest.mark.parametrize(
    ("first", "second"),
    [("complete", "complete"), ("fail", "complete"), ("complete", "fail"), ("fail", "fail")],
)
async def test_a_finished_withdrawal_cannot_be_finished_again(
    funded: tuple[UserPrincipal, UUID, PartnerPrincipal],
    uow: UowFactory,
    clean_db: AsyncEngine,
    first: str,
    second: str,
) -> None:
    alice, account, partner = funded
    tx = await request(uow, alice, account, 2_500)
    actions: dict[str, Callable[..., Awaitable[Transaction]]] = {"complete": complete, "fail": fail}
    await actions[first](uow, partner, tx.transaction_id)
    before = await snapshot(clean_db)

    with pytest.raises(FailedPrecondition) as caught:
        await actions[second](uow, partner, tx.transaction_id)

    assert caught.value.reason == "FAILED_PRECONDITION"
    assert await snapshot(clean_db) == before
    assert await ledger_violations(clean_db) == []


async def test_a_withdrawal_routed_elsewhere_is_not_found(
    funded: tuple[UserPrincipal, UUID, PartnerPrincipal],
    uow: UowFactory,
    ledger: Ledger,
    clean_db: AsyncEngine,
) -> None:
    alice, account, partner = funded
    other = await ledger.partner("other")  # registered later: not the payout partner
    tx = await request(uow, alice, account, 2_500)
    async with clean_db.connect() as conn:
        deposit_id = (
            await conn.execute(text("SELECT transaction_id FROM transactions WHERE kind='deposit'"))
        ).scalar_one()
    before = await snapshot(clean_db)

    for caller, target in [
        (other, tx.transaction_id),  # someone else's withdrawal
        (partner, deposit_id),  # the partner's own transaction, but not a withdrawal
        (partner, uuid4()),  # nothing at all
    ]:
        for action in (complete, fail):
            with pytest.raises(NotFound):
                await action(uow, caller, target)

    assert await snapshot(clean_db) == before


async def test_concurrent_complete_and_fail_have_exactly_one_winner(
    ledger: Ledger, uow: UowFactory, clean_db: AsyncEngine
) -> None:
    alice = await ledger.user("alice")
    account = await ledger.account(alice)
    partner = await ledger.partner("payer")
    await ledger.deposit(partner, account, 100_000)
    withdrawals = [await request(uow, alice, account, 1_000 + i) for i in range(6)]

    async def attempt(action: str, tx_id: UUID) -> str:
        try:
            if action == "complete":
                await complete(uow, partner, tx_id)
            else:
                await fail(uow, partner, tx_id)
        except FailedPrecondition as exc:
            return f"refused: {exc.reason}"
        return action

    calls = [
        attempt(action, tx.transaction_id)
        for tx in withdrawals
        for action in ("complete", "fail") * 4
    ]
    outcomes = await asyncio.gather(*calls)

    completed_total = 0
    for i, tx in enumerate(withdrawals):
        mine = outcomes[i * 8 : (i + 1) * 8]
        winners = [o for o in mine if not o.startswith("refused")]
        assert len(winners) == 1, mine
        assert mine.count("refused: FAILED_PRECONDITION") == 7, mine
        async with uow() as u:
            stored = await u.ledger.get_transaction(tx.transaction_id)
        assert stored is not None
        expected = (
            TransactionStatus.POSTED if winners[0] == "complete" else TransactionStatus.VOIDED
        )
        assert stored.status is expected
        assert len(stored.postings) == (2 if winners[0] == "complete" else 0)
        if winners[0] == "complete":
            completed_total += tx.amount.amount_minor
    assert await balances(clean_db, account) == (100_000 - completed_total, 0)
    assert await ledger_violations(clean_db) == []


# --- idempotency ----------------------------------------------------------------------------


async def test_a_replayed_request_returns_the_original_withdrawal_and_holds_once(
    funded: tuple[UserPrincipal, UUID, PartnerPrincipal],
    uow: UowFactory,
    clean_db: AsyncEngine,
) -> None:
    alice, account, partner = funded
    request_id = uuid4()
    results = await asyncio.gather(
        *(request(uow, alice, account, 1_000, request_id=request_id) for _ in range(5))
    )
    assert len({r.transaction_id for r in results}) == 1
    assert await balances(clean_db, account) == (10_000, 1_000)
    assert await count(clean_db, "SELECT count(*) FROM withdrawals") == 1

    # Even after completion the replay answers what the request answered.
    await complete(uow, partner, results[0].transaction_id)
    replay = await request(uow, alice, account, 1_000, request_id=request_id)
    assert replay == results[0]
    assert replay.status is TransactionStatus.PENDING
    assert await balances(clean_db, account) == (9_000, 0)

    with pytest.raises(FailedPrecondition) as caught:
        await request(uow, alice, account, 999, request_id=request_id)
    assert caught.value.reason == Reason.IDEMPOTENCY_KEY_REUSED
    other_destination = PayoutDestination("Alice Example", "GB", "", "GB82WEST12345698765432")
    with pytest.raises(FailedPrecondition) as caught:
        await request(
            uow, alice, account, 1_000, request_id=request_id, destination=other_destination
        )
    assert caught.value.reason == Reason.IDEMPOTENCY_KEY_REUSED


async def test_replayed_completion_and_failure_return_the_original_result_once(
    funded: tuple[UserPrincipal, UUID, PartnerPrincipal],
    uow: UowFactory,
    clean_db: AsyncEngine,
) -> None:
    alice, account, partner = funded
    to_complete = await request(uow, alice, account, 1_000)
    to_fail = await request(uow, alice, account, 2_000)
    complete_id, fail_id = uuid4(), uuid4()

    completions = await asyncio.gather(
        *(
            complete(uow, partner, to_complete.transaction_id, request_id=complete_id)
            for _ in range(4)
        )
    )
    failures = await asyncio.gather(
        *(fail(uow, partner, to_fail.transaction_id, request_id=fail_id) for _ in range(4))
    )

    assert all(c == completions[0] for c in completions)
    assert completions[0].status is TransactionStatus.POSTED
    assert all(f == failures[0] for f in failures)
    assert failures[0].status is TransactionStatus.VOIDED
    assert await balances(clean_db, account) == (9_000, 0)
    assert (
        await count(
            clean_db,
            "SELECT count(*) FROM postings WHERE transaction_id = :t",
            t=to_complete.transaction_id,
        )
        == 2
    )
    with pytest.raises(FailedPrecondition) as caught:
        await complete(
            uow, partner, to_complete.transaction_id, reference="other", request_id=complete_id
        )
    assert caught.value.reason == Reason.IDEMPOTENCY_KEY_REUSED
    assert await ledger_violations(clean_db) == []


async def test_a_refused_completion_is_replayed_as_refused(
    funded: tuple[UserPrincipal, UUID, PartnerPrincipal], uow: UowFactory
) -> None:
    alice, account, partner = funded
    tx = await request(uow, alice, account, 1_000)
    await fail(uow, partner, tx.transaction_id)
    request_id = uuid4()
    for _ in range(2):
        with pytest.raises(WalletError) as caught:
            await complete(uow, partner, tx.transaction_id, request_id=request_id)
        assert (caught.value.status_name, caught.value.reason) == (
            "FAILED_PRECONDITION",
            "FAILED_PRECONDITION",
        )
