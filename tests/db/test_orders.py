"""Merchant orders on the real database: create, pay once, refund up to the payment, expire."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.conftest import Ledger
from tests.db.test_balance_deltas import settlement_of
from tests.ledger_checks import ACCOUNT_BALANCES, BALANCE, count, ledger_violations
from wallet_server import services
from wallet_server.domain import (
    FailedPrecondition,
    InvalidArgument,
    Money,
    NotFound,
    OrderStatus,
    PartnerPrincipal,
    Reason,
    TransactionKind,
    TransactionStatus,
    UserPrincipal,
    WalletError,
    new_order,
)

# --- shared helpers (test_promotions uses them too) ------------------------------------------


@dataclass
class FakeClock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def timed_uow(clean_db: AsyncEngine, clock: FakeClock) -> Callable[[], services.UnitOfWork]:
    return lambda: services.UnitOfWork(clean_db, clock=clock)


class Shop:
    """Orders, payments and refunds through the use cases, on a unit of work with a fake clock."""

    def __init__(self, uow: Callable[[], services.UnitOfWork]) -> None:
        self.uow = uow

    async def order(
        self,
        merchant: PartnerPrincipal,
        amount_minor: int,
        currency: str = "USD",
        *,
        ttl: timedelta | None = None,
        reference: str = "inv-1",
    ) -> UUID:
        order = await services.create_order(
            services.CreateOrder(
                caller=merchant,
                request_id=uuid4(),
                amount=Money(currency, amount_minor),
                description="a lamp",
                merchant_reference=reference,
                ttl_microseconds=None if ttl is None else int(ttl.total_seconds() * 1_000_000),
            ),
            self.uow(),
        )
        return order.order_id

    async def pay(
        self, payer: UserPrincipal, order_id: UUID, account_id: UUID, request_id: UUID | None = None
    ) -> services.OrderPayment:
        return await services.pay_order(
            services.PayOrder(
                caller=payer,
                request_id=request_id or uuid4(),
                order_id=order_id,
                from_account_id=account_id,
            ),
            self.uow(),
        )

    async def refund(
        self,
        merchant: PartnerPrincipal,
        order_id: UUID,
        amount_minor: int,
        currency: str = "USD",
        request_id: UUID | None = None,
    ) -> services.OrderRefund:
        return await services.refund_payment(
            services.RefundPayment(
                caller=merchant,
                request_id=request_id or uuid4(),
                order_id=order_id,
                amount=Money(currency, amount_minor),
                reason="returned",
            ),
            self.uow(),
        )

    async def get(self, merchant: PartnerPrincipal, order_id: UUID) -> Any:
        return await services.get_order(
            services.GetOrder(caller=merchant, order_id=order_id), self.uow()
        )


@pytest.fixture
def shop(timed_uow: Callable[[], services.UnitOfWork]) -> Shop:
    return Shop(timed_uow)


async def state(engine: AsyncEngine) -> dict[str, Any]:
    """Everything a refused money call must leave untouched (not its idempotency/audit rows)."""
    queries = {
        "accounts": ACCOUNT_BALANCES,
        "orders": "SELECT order_id, status, refunded_amount, paid_at, payer_account_id, "
        "payment_transaction_id FROM orders ORDER BY order_id",
        "promotions": "SELECT promotion_id, spent, ended_at FROM promotions ORDER BY promotion_id",
        "transactions": "SELECT transaction_id FROM transactions ORDER BY transaction_id",
        "postings": "SELECT count(*) FROM postings",
        "outbox": "SELECT count(*) FROM outbox",
    }
    async with engine.connect() as conn:
        return {
            name: [tuple(row) for row in await conn.execute(text(query))]
            for name, query in queries.items()
        }


async def refused(call: Any, error: type[WalletError], reason: str) -> None:
    with pytest.raises(error) as caught:
        await call
    assert caught.value.reason == reason, caught.value.message


async def freeze(engine: AsyncEngine, account_id: UUID) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE accounts SET frozen = true WHERE account_id = :a"), {"a": account_id}
        )


async def events(engine: AsyncEngine) -> list[tuple[str, UUID | None, list[UUID], Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT type, partner_id, account_ids, payload::json AS payload FROM outbox "
                "ORDER BY event_id"
            )
        )
        return [(r.type, r.partner_id, list(r.account_ids), r.payload) for r in rows]


async def funded_user(
    ledger: Ledger, name: str, amount_minor: int, currency: str = "USD"
) -> tuple[UserPrincipal, UUID]:
    user = await ledger.user(name)
    account_id = await ledger.account(user, currency)
    if amount_minor:
        bank = await ledger.partner("bank")
        await ledger.deposit(bank, account_id, amount_minor, currency)
    return user, account_id


# --- creating and reading -------------------------------------------------------------------


async def test_create_read_pay_and_see_the_money_arrive(
    ledger: Ledger, shop: Shop, clean_db: AsyncEngine, clock: FakeClock
) -> None:
    merchant = await ledger.partner("lamps")
    alice, a = await funded_user(ledger, "alice", 10_000)
    order_id = await shop.order(merchant, 2_500, ttl=timedelta(minutes=5))

    created = await shop.get(merchant, order_id)
    assert created.status is OrderStatus.OPEN
    assert (created.merchant_name, created.merchant_reference) == ("lamps", "inv-1")
    assert created.expires_at == clock.now + timedelta(minutes=5)
    as_payer = await services.get_merchant_order(
        services.GetMerchantOrder(caller=alice, order_id=order_id), shop.uow()
    )
    assert as_payer.merchant_reference == ""
    assert as_payer.amount == Money("USD", 2_500)

    clock.advance(timedelta(minutes=1))
    result = await shop.pay(alice, order_id, a)

    tx = result.transaction
    assert (tx.kind, tx.status, tx.amount) == (
        TransactionKind.PAYMENT,
        TransactionStatus.POSTED,
        Money("USD", 2_500),
    )
    assert (tx.order_id, tx.partner_id, tx.from_account_id) == (order_id, merchant.partner_id, a)
    assert result.cashback_transaction is None
    assert result.order.status is OrderStatus.PAID
    assert result.order.merchant_reference == ""  # the payer's view
    assert await ledger.balance(alice, a) == 7_500
    settlement = await count(
        clean_db,
        f"SELECT {BALANCE} FROM accounts a WHERE kind = 'settlement' AND partner_id = :p",
        p=merchant.partner_id,
    )
    assert settlement == 2_500

    stored = await shop.get(merchant, order_id)
    assert (stored.status, stored.paid_at, stored.payer_account_id) == (
        OrderStatus.PAID,
        clock.now,
        a,
    )
    assert stored.payment_transaction_id == tx.transaction_id
    assert stored.merchant_reference == "inv-1"

    # The payment's event (payer and merchant), then the order's (merchant only).
    logged = (await events(clean_db))[-2:]
    assert [(t, p, accounts) for t, p, accounts, _ in logged] == [
        ("transaction_created", merchant.partner_id, [a]),
        ("order_updated", merchant.partner_id, []),
    ]
    assert logged[0][3]["order"]["merchant_reference"] == ""
    assert logged[1][3]["order"]["merchant_reference"] == "inv-1"
    assert logged[1][3]["order"]["status"] == "paid"
    assert await ledger_violations(clean_db) == []


async def test_create_order_refuses_bad_expiry_and_stores_nothing(
    ledger: Ledger, shop: Shop, clean_db: AsyncEngine, clock: FakeClock
) -> None:
    merchant = await ledger.partner("lamps")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"ttl_microseconds": 0}, "ttl"),
        ({"ttl_microseconds": int(timedelta(days=7, seconds=1).total_seconds() * 10**6)}, "ttl"),
        ({"expire_time": clock.now - timedelta(seconds=1)}, "expire_time"),
        ({"expire_time": clock.now + timedelta(days=8)}, "expire_time"),
    ]
    for kwargs, field in cases:
        with pytest.raises(InvalidArgument) as caught:
            await services.create_order(
                services.CreateOrder(
                    caller=merchant,
                    request_id=uuid4(),
                    amount=Money("USD", 100),
                    description="",
                    merchant_reference="",
                    **kwargs,
                ),
                shop.uow(),
            )
        assert [v.field for v in caught.value.violations] == [field]
    assert await count(clean_db, "SELECT count(*) FROM orders") == 0


async def test_create_order_is_idempotent(
    ledger: Ledger, shop: Shop, clean_db: AsyncEngine
) -> None:
    merchant = await ledger.partner("lamps")
    cmd = services.CreateOrder(
        caller=merchant,
        request_id=uuid4(),
        amount=Money("JPY", 1_500),
        description="tea",
        merchant_reference="r",
        ttl_microseconds=60_000_000,
    )
    first = await services.create_order(cmd, shop.uow())
    again = await services.create_order(cmd, shop.uow())
    assert again == first
    other = replace(cmd, amount=Money("JPY", 1_501))
    await refused(
        services.create_order(other, shop.uow()),
        FailedPrecondition,
        Reason.IDEMPOTENCY_KEY_REUSED,
    )
    assert await count(clean_db, "SELECT count(*) FROM orders") == 1


async def test_orders_of_other_merchants_and_unknown_orders_are_not_found(
    ledger: Ledger, shop: Shop
) -> None:
    lamps, rival = await ledger.partner("lamps"), await ledger.partner("rival")
    alice = await ledger.user("alice")
    order_id = await shop.order(lamps, 100)
    await refused(shop.get(rival, order_id), NotFound, Reason.NOT_FOUND)
    await refused(shop.get(lamps, uuid4()), NotFound, Reason.NOT_FOUND)
    await refused(
        services.get_merchant_order(
            services.GetMerchantOrder(caller=alice, order_id=uuid4()), shop.uow()
        ),
        NotFound,
        Reason.NOT_FOUND,
    )


# --- paying: refusals -----------------------------------------------------------------------


async def test_every_payment_refusal_has_its_reason_and_changes_nothing(
    ledger: Ledger, shop: Shop, clean_db: AsyncEngine
) -> None:
    merchant = await ledger.partner("lamps")
    alice, a = await funded_user(ledger, "alice", 1_000)
    a_eur = await ledger.account(alice, "EUR")
    bob, b = await funded_user(ledger, "bob", 5_000)
    carol, c = await funded_user(ledger, "carol", 5_000)
    await freeze(clean_db, c)
    order_id = await shop.order(merchant, 1_001)
    before = await state(clean_db)

    cases = [
        (shop.pay(alice, uuid4(), a), NotFound, Reason.NOT_FOUND),
        # Bob's account exists, but it is not Alice's to pay from.
        (shop.pay(alice, order_id, b), NotFound, Reason.NOT_FOUND),
        (shop.pay(alice, order_id, uuid4()), NotFound, Reason.NOT_FOUND),
        (shop.pay(alice, order_id, a_eur), FailedPrecondition, Reason.CURRENCY_MISMATCH),
        (shop.pay(alice, order_id, a), FailedPrecondition, Reason.INSUFFICIENT_FUNDS),
        (shop.pay(carol, order_id, c), FailedPrecondition, Reason.ACCOUNT_FROZEN),
    ]
    for call, error, reason in cases:
        await refused(call, error, reason)

    assert await state(clean_db) == before
    assert (await shop.get(merchant, order_id)).status is OrderStatus.OPEN
    # The order is still payable by someone who can.
    await shop.pay(bob, order_id, b)
    assert await ledger_violations(clean_db) == []


async def test_orders_make_their_merchants_settlement_account_once_per_currency(
    ledger: Ledger, shop: Shop, clean_db: AsyncEngine
) -> None:
    merchant = await ledger.partner("lamps")
    settlements = (
        "SELECT currency FROM accounts WHERE kind = 'settlement' AND partner_id = :p "
        "ORDER BY currency"
    )

    async def currencies() -> list[str]:
        async with clean_db.connect() as conn:
            found = await conn.execute(text(settlements), {"p": merchant.partner_id})
            return [currency for (currency,) in found]

    await shop.order(merchant, 100)
    assert await currencies() == ["USD"]
    await shop.order(merchant, 200, reference="inv-2")
    await shop.order(merchant, 300, "EUR", reference="inv-3")
    assert await currencies() == ["EUR", "USD"]


async def test_an_order_whose_merchant_has_no_settlement_account_yet_is_paid_and_refunded(
    ledger: Ledger, shop: Shop, clean_db: AsyncEngine, clock: FakeClock
) -> None:
    """``CreateOrder`` makes the merchant's settlement account; an order stored before it did
    (or by an older server) gets it made by the payment."""
    merchant = await ledger.partner("lamps")
    alice, a = await funded_user(ledger, "alice", 5_000)
    order_id = uuid4()
    async with shop.uow() as unit:  # stored as it is, without the use case
        await unit.orders.add(
            new_order(
                order_id=order_id,
                partner_id=merchant.partner_id,
                merchant_name=merchant.name,
                amount=Money("USD", 1_000),
                description="a lamp",
                merchant_reference="inv-1",
                now=clock.now,
                expires_at=clock.now + timedelta(minutes=15),
            )
        )
        await unit.commit()
    settlement = "SELECT count(*) FROM accounts WHERE kind = 'settlement' AND partner_id = :p"
    assert await count(clean_db, settlement, p=merchant.partner_id) == 0

    payment = await shop.pay(alice, order_id, a)
    await shop.refund(merchant, order_id, 400)

    assert await count(clean_db, settlement, p=merchant.partner_id) == 1
    assert payment.transaction.to_account_id == await settlement_of(clean_db, merchant)
    assert await ledger.balance(alice, a) == 4_400
    assert await ledger_violations(clean_db) == []


async def test_a_paid_order_cannot_be_paid_again_by_anyone(
    ledger: Ledger, shop: Shop, clean_db: AsyncEngine
) -> None:
    merchant = await ledger.partner("lamps")
    alice, a = await funded_user(ledger, "alice", 5_000)
    bob, b = await funded_user(ledger, "bob", 5_000)
    order_id = await shop.order(merchant, 1_000)
    await shop.pay(alice, order_id, a)
    before = await state(clean_db)

    await refused(shop.pay(alice, order_id, a), FailedPrecondition, Reason.ORDER_ALREADY_PAID)
    await refused(shop.pay(bob, order_id, b), FailedPrecondition, Reason.ORDER_ALREADY_PAID)
    # Still "already paid" once refunded: a refunded order is not payable again.
    await shop.refund(merchant, order_id, 1_000)
    after_refund = await state(clean_db)
    await refused(shop.pay(bob, order_id, b), FailedPrecondition, Reason.ORDER_ALREADY_PAID)

    assert await state(clean_db) == after_refund
    assert before["accounts"] != after_refund["accounts"]
    assert await ledger.balance(bob, b) == 5_000


async def test_an_expired_order_cannot_be_paid(
    ledger: Ledger, shop: Shop, clean_db: AsyncEngine, clock: FakeClock
) -> None:
    merchant = await ledger.partner("lamps")
    alice, a = await funded_user(ledger, "alice", 5_000)
    order_id = await shop.order(merchant, 1_000, ttl=timedelta(minutes=2))
    clock.advance(timedelta(minutes=2))  # the expiry itself: no longer payable
    before = await state(clean_db)

    await refused(shop.pay(alice, order_id, a), FailedPrecondition, Reason.ORDER_EXPIRED)

    assert await state(clean_db) == before
    assert (await shop.get(merchant, order_id)).status is OrderStatus.EXPIRED
    assert await ledger.balance(alice, a) == 5_000


async def test_a_replayed_payment_returns_the_original_outcome(
    ledger: Ledger, shop: Shop, clean_db: AsyncEngine
) -> None:
    merchant = await ledger.partner("lamps")
    alice, a = await funded_user(ledger, "alice", 500)
    cheap, dear = await shop.order(merchant, 400), await shop.order(merchant, 900)

    key = uuid4()
    first = await shop.pay(alice, cheap, a, request_id=key)
    again = await shop.pay(alice, cheap, a, request_id=key)
    assert again == first
    assert await count(clean_db, "SELECT count(*) FROM transactions WHERE kind = 'payment'") == 1

    # A refusal is remembered too, even once the money is there.
    refusal_key = uuid4()
    await refused(
        shop.pay(alice, dear, a, request_id=refusal_key),
        FailedPrecondition,
        Reason.INSUFFICIENT_FUNDS,
    )
    await ledger.deposit(await ledger.partner("bank"), a, 5_000)
    await refused(
        shop.pay(alice, dear, a, request_id=refusal_key),
        FailedPrecondition,
        Reason.INSUFFICIENT_FUNDS,
    )
    # The same key for another order is a different request.
    await refused(
        shop.pay(alice, dear, a, request_id=key), FailedPrecondition, Reason.IDEMPOTENCY_KEY_REUSED
    )
    assert await ledger.balance(alice, a) == 5_100


async def test_concurrent_payers_of_one_order_exactly_one_wins(
    ledger: Ledger, shop: Shop, clean_db: AsyncEngine
) -> None:
    merchant = await ledger.partner("lamps")
    payers = [await funded_user(ledger, f"payer{i}", 2_000) for i in range(24)]
    order_id = await shop.order(merchant, 1_500)

    async def attempt(user: UserPrincipal, account_id: UUID) -> str:
        try:
            await shop.pay(user, order_id, account_id)
        except FailedPrecondition as exc:
            return exc.reason
        return "OK"

    outcomes = await asyncio.gather(*(attempt(u, acc) for u, acc in payers))

    assert outcomes.count("OK") == 1
    assert outcomes.count(Reason.ORDER_ALREADY_PAID) == len(payers) - 1
    winner = payers[outcomes.index("OK")]
    assert await ledger.balance(*winner) == 500
    assert await count(clean_db, "SELECT count(*) FROM transactions WHERE kind = 'payment'") == 1
    order = await shop.get(merchant, order_id)
    assert (order.status, order.payer_account_id) == (OrderStatus.PAID, winner[1])
    assert await ledger_violations(clean_db) == []


async def test_the_same_payment_sent_concurrently_is_applied_once(
    ledger: Ledger, shop: Shop, clean_db: AsyncEngine
) -> None:
    merchant = await ledger.partner("lamps")
    alice, a = await funded_user(ledger, "alice", 5_000)
    order_id = await shop.order(merchant, 1_000)
    key = uuid4()

    results = await asyncio.gather(
        *(shop.pay(alice, order_id, a, request_id=key) for _ in range(12))
    )

    assert len({r.transaction.transaction_id for r in results}) == 1
    assert await ledger.balance(alice, a) == 4_000
    assert await ledger_violations(clean_db) == []


# --- refunds --------------------------------------------------------------------------------


async def test_partial_then_full_refund_returns_the_money_to_the_payer(
    ledger: Ledger, shop: Shop, clean_db: AsyncEngine
) -> None:
    merchant = await ledger.partner("lamps")
    alice, a = await funded_user(ledger, "alice", 5_000)
    order_id = await shop.order(merchant, 3_000)
    await shop.pay(alice, order_id, a)

    first = await shop.refund(merchant, order_id, 1_000)
    tx = first.transaction
    assert (tx.kind, tx.status, tx.to_account_id, tx.memo) == (
        TransactionKind.REFUND,
        TransactionStatus.POSTED,
        a,
        "returned",
    )
    assert (tx.order_id, tx.partner_id) == (order_id, merchant.partner_id)
    assert (first.order.status, first.order.refunded_minor) == (
        OrderStatus.PARTIALLY_REFUNDED,
        1_000,
    )
    assert await ledger.balance(alice, a) == 3_000

    second = await shop.refund(merchant, order_id, 2_000)
    assert (second.order.status, second.order.refunded_minor) == (OrderStatus.REFUNDED, 3_000)
    assert await ledger.balance(alice, a) == 5_000
    stored = await shop.get(merchant, order_id)
    assert (stored.status, stored.refunded_minor) == (OrderStatus.REFUNDED, 3_000)
    assert [t for t, *_ in await events(clean_db)][-2:] == ["transaction_created", "order_updated"]
    assert await ledger_violations(clean_db) == []


async def test_every_refund_refusal_has_its_reason_and_changes_nothing(
    ledger: Ledger, shop: Shop, clean_db: AsyncEngine, clock: FakeClock
) -> None:
    merchant, rival = await ledger.partner("lamps"), await ledger.partner("rival")
    alice, a = await funded_user(ledger, "alice", 5_000)
    unpaid = await shop.order(merchant, 1_000)
    expired = await shop.order(merchant, 1_000, ttl=timedelta(seconds=1))
    order_id = await shop.order(merchant, 1_000)
    await shop.pay(alice, order_id, a)
    await shop.refund(merchant, order_id, 600)
    clock.advance(timedelta(seconds=2))
    before = await state(clean_db)

    cases = [
        (shop.refund(merchant, uuid4(), 100), NotFound, Reason.NOT_FOUND),
        (shop.refund(rival, order_id, 100), NotFound, Reason.NOT_FOUND),
        (shop.refund(merchant, unpaid, 100), FailedPrecondition, "FAILED_PRECONDITION"),
        (shop.refund(merchant, expired, 100), FailedPrecondition, "FAILED_PRECONDITION"),
        (shop.refund(merchant, order_id, 100, "EUR"), FailedPrecondition, Reason.CURRENCY_MISMATCH),
        (shop.refund(merchant, order_id, 401), FailedPrecondition, Reason.REFUND_EXCEEDS_PAYMENT),
    ]
    for call, error, reason in cases:
        await refused(call, error, reason)

    assert await state(clean_db) == before
    # What is left can still be refunded.
    assert (await shop.refund(merchant, order_id, 400)).order.status is OrderStatus.REFUNDED
    assert await ledger_violations(clean_db) == []


async def test_a_refund_to_a_frozen_account_is_refused(
    ledger: Ledger, shop: Shop, clean_db: AsyncEngine
) -> None:
    merchant = await ledger.partner("lamps")
    alice, a = await funded_user(ledger, "alice", 5_000)
    order_id = await shop.order(merchant, 1_000)
    await shop.pay(alice, order_id, a)
    await freeze(clean_db, a)
    before = await state(clean_db)

    await refused(shop.refund(merchant, order_id, 100), FailedPrecondition, Reason.ACCOUNT_FROZEN)
    assert await state(clean_db) == before


async def test_concurrent_refunds_never_exceed_the_payment(
    ledger: Ledger, shop: Shop, clean_db: AsyncEngine
) -> None:
    merchant = await ledger.partner("lamps")
    alice, a = await funded_user(ledger, "alice", 1_000)
    order_id = await shop.order(merchant, 1_000)
    await shop.pay(alice, order_id, a)

    async def attempt(amount: int) -> str:
        try:
            await shop.refund(merchant, order_id, amount)
        except FailedPrecondition as exc:
            return exc.reason
        return "OK"

    amounts = [70] * 30  # 2100 asked for, 1000 paid
    outcomes = await asyncio.gather(*(attempt(x) for x in amounts))

    assert outcomes.count("OK") == 1_000 // 70
    assert set(outcomes) == {"OK", Reason.REFUND_EXCEEDS_PAYMENT}
    refunded = await count(clean_db, "SELECT refunded_amount FROM orders")
    assert refunded == 70 * outcomes.count("OK")
    assert await ledger.balance(alice, a) == refunded
    assert (
        await count(
            clean_db, "SELECT coalesce(sum(amount), 0) FROM transactions WHERE kind = 'refund'"
        )
        == refunded
    )
    # The remainder (1000 - 14 * 70 = 20) is still refundable, and then nothing more.
    await shop.refund(merchant, order_id, 1_000 - refunded)
    await refused(
        shop.refund(merchant, order_id, 1), FailedPrecondition, Reason.REFUND_EXCEEDS_PAYMENT
    )
    assert (await shop.get(merchant, order_id)).status is OrderStatus.REFUNDED
    assert await ledger_violations(clean_db) == []


async def test_the_database_refuses_refunds_beyond_the_payment_even_by_direct_sql(
    ledger: Ledger, shop: Shop, clean_db: AsyncEngine
) -> None:
    merchant = await ledger.partner("lamps")
    order_id = await shop.order(merchant, 1_000)
    with pytest.raises(IntegrityError, match="refunds_within_payment"):
        async with clean_db.begin() as conn:
            await conn.execute(text("UPDATE orders SET refunded_amount = 1001"))
    assert (
        await count(clean_db, "SELECT refunded_amount FROM orders WHERE order_id = :o", o=order_id)
        == 0
    )


# --- expiry ---------------------------------------------------------------------------------


async def test_expire_orders_stores_expiry_and_tells_the_merchant(
    ledger: Ledger, shop: Shop, clean_db: AsyncEngine, clock: FakeClock
) -> None:
    merchant = await ledger.partner("lamps")
    alice, a = await funded_user(ledger, "alice", 5_000)
    short = [await shop.order(merchant, 100, ttl=timedelta(minutes=1)) for _ in range(3)]
    paid = await shop.order(merchant, 100, ttl=timedelta(minutes=1))
    await shop.pay(alice, paid, a)
    later = await shop.order(merchant, 100, ttl=timedelta(hours=1))
    clock.advance(timedelta(minutes=1))

    assert await services.expire_orders(services.ExpireOrders(limit=2), shop.uow()) == 2
    assert await services.expire_orders(services.ExpireOrders(), shop.uow()) == 1
    assert await services.expire_orders(services.ExpireOrders(), shop.uow()) == 0

    async with clean_db.connect() as conn:
        rows: dict[UUID, str] = {
            r.order_id: r.status
            for r in await conn.execute(text("SELECT order_id, status FROM orders"))
        }
    assert {rows[o] for o in short} == {"expired"}
    assert (rows[paid], rows[later]) == ("paid", "open")
    expiry_events = [e for e in await events(clean_db) if e[0] == "order_updated"][-3:]
    assert {e[3]["order"]["order_id"] for e in expiry_events} == {str(o) for o in short}
    assert {(e[1], e[3]["order"]["status"]) for e in expiry_events} == {
        (merchant.partner_id, "expired")
    }
    await refused(shop.pay(alice, short[0], a), FailedPrecondition, Reason.ORDER_EXPIRED)


async def test_only_the_payer_sees_who_paid_an_order_and_what_came_back(
    ledger: Ledger, shop: Shop
) -> None:
    merchant = await ledger.partner("lamps")
    alice, a = await funded_user(ledger, "alice", 10_000)
    bob = await ledger.user("bob")
    order_id = await shop.order(merchant, 2_500)
    paid = await shop.pay(alice, order_id, a)
    await shop.refund(merchant, order_id, 500)

    def view(who: UserPrincipal) -> Any:
        return services.get_merchant_order(
            services.GetMerchantOrder(caller=who, order_id=order_id), shop.uow()
        )

    as_payer = await view(alice)
    as_stranger = await view(bob)
    assert as_payer.payment_transaction_id == paid.transaction.transaction_id
    assert (as_payer.payer_account_id, as_payer.refunded_minor) == (a, 500)
    assert as_stranger.status is as_payer.status  # whether it can still be paid is public
    assert (
        as_stranger.payment_transaction_id,
        as_stranger.payer_account_id,
        as_stranger.paid_at,
        as_stranger.refunded_minor,
        as_stranger.merchant_reference,
    ) == (None, None, None, 0, "")
