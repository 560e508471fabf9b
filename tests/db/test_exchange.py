"""Exchange rates, quotes and exchanges on the real database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.conftest import Ledger
from tests.ledger_checks import ACCOUNT_BALANCES, BALANCE, count, ledger_violations
from wallet_server import services
from wallet_server.domain import (
    INT64_MAX,
    QUOTE_LIFETIME,
    FailedPrecondition,
    InvalidArgument,
    Money,
    NotFound,
    OperatorPrincipal,
    Quote,
    Reason,
    TransactionKind,
    TransactionStatus,
    UserPrincipal,
    WalletError,
)

OPERATOR = OperatorPrincipal(operator_id=uuid4(), name="ops")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def set_rate(
    uow: Callable[[], services.UnitOfWork], from_currency: str, to_currency: str, rate: str
) -> None:
    await services.set_exchange_rate(
        services.SetExchangeRate(
            caller=OPERATOR,
            request_id=uuid4(),
            from_currency=from_currency,
            to_currency=to_currency,
            rate=rate,
        ),
        uow(),
    )


async def quote(
    uow: services.UnitOfWork,
    caller: UserPrincipal,
    source: UUID,
    destination: UUID,
    *,
    sell: Money | None = None,
    buy: Money | None = None,
) -> Quote:
    return await services.get_quote(
        services.GetQuote(
            caller=caller,
            from_account_id=source,
            to_account_id=destination,
            from_amount=sell,
            to_amount=buy,
        ),
        uow,
    )


def exchange_cmd(
    caller: UserPrincipal, quote_id: UUID, request_id: UUID | None = None
) -> services.ExchangeCurrency:
    return services.ExchangeCurrency(
        caller=caller, request_id=request_id or uuid4(), quote_id=quote_id
    )


async def snapshot(engine: AsyncEngine) -> tuple[object, ...]:
    """Everything an exchange may change: balances, postings, transactions, quotes, events."""
    async with engine.connect() as conn:
        balances = (await conn.execute(text(ACCOUNT_BALANCES))).all()
        executed = (
            await conn.execute(text("SELECT quote_id, transaction_id FROM quotes ORDER BY 1"))
        ).all()
    return (
        tuple(balances),
        tuple(executed),
        await count(engine, "SELECT count(*) FROM postings"),
        await count(engine, "SELECT count(*) FROM transactions"),
        await count(engine, "SELECT count(*) FROM outbox"),
    )


async def funded_pair(
    ledger: Ledger, name: str = "alice", usd: int = 10_000
) -> tuple[UserPrincipal, UUID, UUID]:
    user = await ledger.user(name)
    usd_account = await ledger.account(user, "USD")
    jpy_account = await ledger.account(user, "JPY")
    if usd:
        await ledger.deposit(await ledger.partner(f"psp-{name}"), usd_account, usd)
    return user, usd_account, jpy_account


async def test_a_quote_executes_as_one_exchange_with_four_legs_through_the_fx_pools(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice, usd, jpy = await funded_pair(ledger)
    await set_rate(uow, "USD", "JPY", "151.37")

    q = await quote(uow(), alice, usd, jpy, sell=Money("USD", 1_000))
    assert (q.from_amount, q.to_amount, q.rate) == (
        Money("USD", 1_000),
        Money("JPY", 1_513),
        "151.37",
    )
    assert q.expires_at - q.created_at == QUOTE_LIFETIME

    tx = await services.exchange_currency(exchange_cmd(alice, q.quote_id), uow())

    assert (tx.kind, tx.status) == (TransactionKind.EXCHANGE, TransactionStatus.POSTED)
    assert (tx.amount, tx.to_amount, tx.exchange_rate) == (
        Money("USD", 1_000),
        Money("JPY", 1_513),
        "151.37",
    )
    assert (tx.from_account_id, tx.to_account_id) == (usd, jpy)
    async with clean_db.connect() as conn:
        pool_rows = (
            await conn.execute(
                text(
                    f"SELECT currency, account_id, {BALANCE} AS posted FROM accounts a "
                    "WHERE kind = 'fx_pool'"
                )
            )
        ).all()
    pool = {row.currency: row for row in pool_rows}
    assert (pool["USD"].posted, pool["JPY"].posted) == (1_000, -1_513)
    assert [(p.account_id, p.amount, p.currency) for p in tx.postings] == [
        (usd, -1_000, "USD"),
        (pool["USD"].account_id, 1_000, "USD"),
        (pool["JPY"].account_id, -1_513, "JPY"),
        (jpy, 1_513, "JPY"),
    ]
    assert await ledger.balance(alice, usd) == 9_000
    assert await ledger.balance(alice, jpy) == 1_513
    stored = await services.get_transaction(
        services.GetTransaction(caller=alice, transaction_id=tx.transaction_id), uow()
    )
    assert stored == tx
    assert (
        await count(
            clean_db,
            "SELECT count(*) FROM quotes WHERE quote_id = :q AND transaction_id = :t",
            q=q.quote_id,
            t=tx.transaction_id,
        )
        == 1
    )
    assert (
        await count(
            clean_db,
            "SELECT count(*) FROM outbox WHERE type = 'transaction_created' "
            "AND account_ids @> ARRAY[CAST(:u AS uuid), CAST(:j AS uuid)] "
            "AND payload::json -> 'transaction' ->> 'transaction_id' = :t",
            u=str(usd),
            j=str(jpy),
            t=str(tx.transaction_id),
        )
        == 1
    )
    assert await ledger_violations(clean_db) == []


async def test_a_quote_for_the_amount_bought_rounds_the_price_up_and_kwd_keeps_three_decimals(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    bob = await ledger.user("bob")
    jpy = await ledger.account(bob, "JPY")
    kwd = await ledger.account(bob, "KWD")
    await ledger.deposit(await ledger.partner(), jpy, 5_000, "JPY")
    await set_rate(uow, "JPY", "KWD", "0.00203")

    exact = await quote(uow(), bob, jpy, kwd, buy=Money("KWD", 2_030))
    assert exact.from_amount == Money("JPY", 1_000)
    rounded = await quote(uow(), bob, jpy, kwd, buy=Money("KWD", 2_031))
    assert rounded.from_amount == Money("JPY", 1_001)  # 1000.49... yen, rounded up

    tx = await services.exchange_currency(exchange_cmd(bob, rounded.quote_id), uow())
    assert (tx.amount, tx.to_amount) == (Money("JPY", 1_001), Money("KWD", 2_031))
    assert await ledger.balance(bob, jpy) == 3_999
    assert await ledger.balance(bob, kwd) == 2_031
    assert await ledger_violations(clean_db) == []


async def test_a_quote_keeps_its_amounts_when_the_rate_changes(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice, usd, jpy = await funded_pair(ledger)
    await set_rate(uow, "USD", "JPY", "150")
    old = await quote(uow(), alice, usd, jpy, sell=Money("USD", 100))
    await set_rate(uow, "USD", "JPY", "100")
    new = await quote(uow(), alice, usd, jpy, sell=Money("USD", 100))

    assert (old.to_amount, new.to_amount) == (Money("JPY", 150), Money("JPY", 100))
    tx = await services.exchange_currency(exchange_cmd(alice, old.quote_id), uow())
    assert (tx.to_amount, tx.exchange_rate) == (Money("JPY", 150), "150")
    assert await ledger_violations(clean_db) == []


async def test_rates_are_set_idempotently_replaced_and_listed_in_pages(
    uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    request_id = uuid4()
    cmd = services.SetExchangeRate(
        caller=OPERATOR,
        request_id=request_id,
        from_currency="USD",
        to_currency="JPY",
        rate="151.37",
    )
    first = await services.set_exchange_rate(cmd, uow())
    assert await services.set_exchange_rate(cmd, uow()) == first
    with pytest.raises(FailedPrecondition) as reused:
        await services.set_exchange_rate(
            services.SetExchangeRate(
                caller=OPERATOR,
                request_id=request_id,
                from_currency="USD",
                to_currency="JPY",
                rate="152",
            ),
            uow(),
        )
    assert reused.value.reason == Reason.IDEMPOTENCY_KEY_REUSED
    with pytest.raises(InvalidArgument):
        await services.set_exchange_rate(
            services.SetExchangeRate(
                caller=OPERATOR,
                request_id=uuid4(),
                from_currency="USD",
                to_currency="USD",
                rate="1",
            ),
            uow(),
        )

    await set_rate(uow, "USD", "JPY", "149.5")  # replaces, one row per direction
    await set_rate(uow, "JPY", "USD", "0.0066")
    await set_rate(uow, "EUR", "USD", "1.08")

    seen: list[tuple[str, str, str]] = []
    after = None
    while True:
        page = await services.list_exchange_rates(
            services.ListExchangeRates(caller=OPERATOR, page_size=2, after=after), uow()
        )
        seen += [(r.from_currency, r.to_currency, r.rate) for r in page.rates]
        after = page.next_after
        if after is None:
            break
    assert seen == [("EUR", "USD", "1.08"), ("JPY", "USD", "0.0066"), ("USD", "JPY", "149.5")]


async def test_get_quote_refusals_store_nothing(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice, usd, jpy = await funded_pair(ledger)
    kwd = await ledger.account(alice, "KWD")
    bob = await ledger.user("bob")
    bob_jpy = await ledger.account(bob, "JPY")
    await set_rate(uow, "USD", "JPY", "151.37")
    await set_rate(uow, "KWD", "USD", "3.2543")
    before = await snapshot(clean_db)

    cases: list[tuple[UUID, UUID, Money | None, Money | None, type[WalletError], str]] = [
        # Bob's account exists, but it is not Alice's.
        (usd, bob_jpy, Money("USD", 100), None, NotFound, Reason.NOT_FOUND),
        (uuid4(), jpy, Money("USD", 100), None, NotFound, Reason.NOT_FOUND),
        (usd, usd, Money("USD", 100), None, InvalidArgument, Reason.INVALID_ARGUMENT),
        (usd, jpy, Money("JPY", 100), None, InvalidArgument, Reason.INVALID_ARGUMENT),
        (usd, jpy, None, Money("USD", 100), InvalidArgument, Reason.INVALID_ARGUMENT),
        # No rate JPY -> USD (only the other direction is set).
        (jpy, usd, Money("JPY", 100), None, FailedPrecondition, "FAILED_PRECONDITION"),
        # KWD 0.001 is 0.32543 cents.
        (kwd, usd, Money("KWD", 1), None, InvalidArgument, Reason.INVALID_ARGUMENT),
        (usd, jpy, Money("USD", INT64_MAX), None, InvalidArgument, Reason.AMOUNT_OVERFLOW),
    ]
    for source, destination, sell, buy, error, reason in cases:
        with pytest.raises(error) as caught:
            await quote(uow(), alice, source, destination, sell=sell, buy=buy)
        assert caught.value.reason == reason, (source, destination, sell, buy)

    assert await snapshot(clean_db) == before
    assert await count(clean_db, "SELECT count(*) FROM quotes") == 0


async def test_exchange_refusals_change_nothing(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice, usd, jpy = await funded_pair(ledger, usd=500)
    bob, bob_usd, bob_jpy = await funded_pair(ledger, "bob")
    await set_rate(uow, "USD", "JPY", "151.37")
    clock = Clock(T0)

    def at(clock: Clock) -> services.UnitOfWork:
        return services.UnitOfWork(clean_db, clock=clock)

    too_big = await quote(at(clock), alice, usd, jpy, sell=Money("USD", 501))
    frozen = await quote(at(clock), alice, usd, jpy, sell=Money("USD", 100))
    bobs = await quote(at(clock), bob, bob_usd, bob_jpy, sell=Money("USD", 100))
    stale = await quote(at(clock), alice, usd, jpy, sell=Money("USD", 100))
    used = await quote(at(clock), alice, usd, jpy, sell=Money("USD", 100))
    await services.exchange_currency(exchange_cmd(alice, used.quote_id), at(clock))
    before = await snapshot(clean_db)

    async def refused(quote_id: UUID, error: type[WalletError], reason: str) -> None:
        with pytest.raises(error) as caught:
            await services.exchange_currency(exchange_cmd(alice, quote_id), at(clock))
        assert caught.value.reason == reason, quote_id
        assert await snapshot(clean_db) == before, quote_id

    await refused(too_big.quote_id, FailedPrecondition, Reason.INSUFFICIENT_FUNDS)
    await refused(bobs.quote_id, NotFound, Reason.NOT_FOUND)
    await refused(uuid4(), NotFound, Reason.NOT_FOUND)
    await refused(used.quote_id, FailedPrecondition, Reason.QUOTE_EXPIRED)

    async with clean_db.begin() as conn:
        await conn.execute(
            text("UPDATE accounts SET frozen = true WHERE account_id = :a"), {"a": jpy}
        )
    before = await snapshot(clean_db)
    await refused(frozen.quote_id, FailedPrecondition, Reason.ACCOUNT_FROZEN)
    async with clean_db.begin() as conn:
        await conn.execute(text("UPDATE accounts SET frozen = false"))
    before = await snapshot(clean_db)

    # Expired at its expiry time, as orders and sessions are; valid a microsecond before.
    clock.now = stale.expires_at
    await refused(stale.quote_id, FailedPrecondition, Reason.QUOTE_EXPIRED)
    clock.now = stale.expires_at - timedelta(microseconds=1)
    tx = await services.exchange_currency(exchange_cmd(alice, stale.quote_id), at(clock))
    assert tx.to_amount == Money("JPY", 151)
    assert await ledger_violations(clean_db) == []


async def test_replays_return_the_same_exchange_and_remember_refusals(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice, usd, jpy = await funded_pair(ledger, usd=50)
    await set_rate(uow, "USD", "JPY", "151.37")
    q = await quote(uow(), alice, usd, jpy, sell=Money("USD", 100))
    request_id = uuid4()

    with pytest.raises(FailedPrecondition) as first:
        await services.exchange_currency(exchange_cmd(alice, q.quote_id, request_id), uow())
    assert first.value.reason == Reason.INSUFFICIENT_FUNDS
    await ledger.deposit(await ledger.partner("more"), usd, 50)
    # The same request_id gets the same answer; a new one executes the still valid quote.
    with pytest.raises(FailedPrecondition) as again:
        await services.exchange_currency(exchange_cmd(alice, q.quote_id, request_id), uow())
    assert again.value.reason == Reason.INSUFFICIENT_FUNDS

    retry_id = uuid4()
    tx = await services.exchange_currency(exchange_cmd(alice, q.quote_id, retry_id), uow())
    replay = await services.exchange_currency(exchange_cmd(alice, q.quote_id, retry_id), uow())
    assert replay == tx

    other = await quote(uow(), alice, usd, jpy, sell=Money("USD", 1))
    with pytest.raises(FailedPrecondition) as reused:
        await services.exchange_currency(exchange_cmd(alice, other.quote_id, retry_id), uow())
    assert reused.value.reason == Reason.IDEMPOTENCY_KEY_REUSED
    assert await count(clean_db, "SELECT count(*) FROM transactions WHERE kind = 'exchange'") == 1
    assert await ledger_violations(clean_db) == []


async def test_concurrent_executions_of_one_quote_make_exactly_one_exchange(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    alice, usd, jpy = await funded_pair(ledger)
    await set_rate(uow, "USD", "JPY", "151.37")
    q = await quote(uow(), alice, usd, jpy, sell=Money("USD", 2_500))

    async def one() -> str:
        try:
            await services.exchange_currency(exchange_cmd(alice, q.quote_id), uow())
        except FailedPrecondition as exc:
            return str(exc.reason)
        return "OK"

    outcomes = await asyncio.gather(*(one() for _ in range(24)))

    assert outcomes.count("OK") == 1
    assert outcomes.count(Reason.QUOTE_EXPIRED) == 23
    assert await count(clean_db, "SELECT count(*) FROM transactions WHERE kind = 'exchange'") == 1
    assert await ledger.balance(alice, usd) == 7_500
    assert await ledger.balance(alice, jpy) == 3_784  # floor(2500 * 1.5137)
    assert await ledger_violations(clean_db) == []


async def test_many_users_exchanging_at_once_keep_every_currency_balanced(
    ledger: Ledger, uow: Callable[[], services.UnitOfWork], clean_db: AsyncEngine
) -> None:
    users = [await funded_pair(ledger, f"user{i}", usd=5_000) for i in range(8)]
    await set_rate(uow, "USD", "JPY", "151.37")
    await set_rate(uow, "JPY", "USD", "0.0066")

    async def round_trip(user: UserPrincipal, usd: UUID, jpy: UUID) -> None:
        for _ in range(3):
            there = await quote(uow(), user, usd, jpy, sell=Money("USD", 1_000))
            await services.exchange_currency(exchange_cmd(user, there.quote_id), uow())
            back = await quote(uow(), user, jpy, usd, buy=Money("USD", 500))
            await services.exchange_currency(exchange_cmd(user, back.quote_id), uow())

    await asyncio.gather(*(round_trip(*u) for u in users))

    assert await count(clean_db, "SELECT count(*) FROM transactions WHERE kind = 'exchange'") == 48
    for user, usd, jpy in users:
        # Each round: USD 10.00 -> JPY 1513, then USD 5.00 costs ceil(500 / 0.66) = JPY 758.
        assert await ledger.balance(user, usd) == 5_000 - 3 * 1_000 + 3 * 500
        assert await ledger.balance(user, jpy) == 3 * (1_513 - 758)
    assert (
        await count(
            clean_db,
            f"SELECT {BALANCE} FROM accounts a WHERE kind = 'fx_pool' AND currency = 'USD'",
        )
        == 8 * 3 * 500
    )
    assert await ledger_violations(clean_db) == []
