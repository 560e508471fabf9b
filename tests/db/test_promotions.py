"""Cashback promotions on the real database: managed by operators, paid with PayOrder."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.conftest import Ledger
from tests.db.test_orders import FakeClock, Shop, events, freeze, funded_user, refused, state
from tests.ledger_checks import BALANCE, count, ledger_violations
from wallet_server import services
from wallet_server.domain import (
    FailedPrecondition,
    InvalidArgument,
    Money,
    NotFound,
    OperatorPrincipal,
    Promotion,
    PromotionStatus,
    Reason,
    TransactionKind,
    TransactionStatus,
)

OPERATOR = OperatorPrincipal(operator_id=uuid4(), name="ops")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def timed_uow(clean_db: AsyncEngine, clock: FakeClock) -> Callable[[], services.UnitOfWork]:
    return lambda: services.UnitOfWork(clean_db, clock=clock)


@pytest.fixture
def shop(timed_uow: Callable[[], services.UnitOfWork]) -> Shop:
    return Shop(timed_uow)


class Campaigns:
    def __init__(self, uow: Callable[[], services.UnitOfWork], clock: FakeClock) -> None:
        self.uow = uow
        self.clock = clock

    def command(
        self,
        *,
        bp: int = 1_000,
        cap: int = 100,
        budget: int = 10_000,
        currency: str = "USD",
        merchants: tuple[str, ...] = (),
        min_payment: int | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        name: str = "Spring 10% back",
        request_id: UUID | None = None,
    ) -> services.CreatePromotion:
        return services.CreatePromotion(
            caller=OPERATOR,
            request_id=request_id or uuid4(),
            display_name=name,
            cashback_basis_points=bp,
            max_cashback_per_payment=Money(currency, cap),
            budget=Money(currency, budget),
            min_payment_amount=None if min_payment is None else Money(currency, min_payment),
            merchant_names=merchants,
            start_time=start,
            end_time=end or self.clock.now + timedelta(days=30),
        )

    async def create(self, **kw: Any) -> Promotion:
        return await services.create_promotion(self.command(**kw), self.uow())

    async def get(self, promotion_id: UUID) -> Promotion:
        return await services.get_promotion(
            services.GetPromotion(caller=OPERATOR, promotion_id=promotion_id), self.uow()
        )

    async def end(self, promotion_id: UUID, request_id: UUID | None = None) -> Promotion:
        return await services.end_promotion(
            services.EndPromotion(
                caller=OPERATOR, request_id=request_id or uuid4(), promotion_id=promotion_id
            ),
            self.uow(),
        )


@pytest.fixture
def campaigns(timed_uow: Callable[[], services.UnitOfWork], clock: FakeClock) -> Campaigns:
    return Campaigns(timed_uow, clock)


async def promotions_balance(engine: AsyncEngine, currency: str = "USD") -> int:
    return await count(
        engine,
        f"SELECT coalesce(sum({BALANCE}), 0) FROM accounts a "
        "WHERE kind = 'promotions' AND currency = :c",
        c=currency,
    )


# --- managing promotions --------------------------------------------------------------------


async def test_create_get_and_end_a_promotion(
    ledger: Ledger, campaigns: Campaigns, clean_db: AsyncEngine, clock: FakeClock
) -> None:
    await ledger.partner("lamps")
    created = await campaigns.create(merchants=("lamps",), min_payment=500)

    assert created.status_at(clock.now) is PromotionStatus.ACTIVE
    assert (created.spent, created.merchant_names) == (Money("USD", 0), ("lamps",))
    assert created.start_time == clock.now  # unset start: now
    funding = await count(
        clean_db,
        "SELECT count(*) FROM accounts WHERE account_id = :a AND kind = 'promotions' "
        "AND currency = 'USD' AND partner_id IS NULL",
        a=created.funding_account_id,
    )
    assert funding == 1
    assert await campaigns.get(created.promotion_id) == created

    clock.advance(timedelta(hours=1))
    ended = await campaigns.end(created.promotion_id)
    assert ended.ended_at == clock.now
    assert ended.status_at(clock.now) is PromotionStatus.ENDED
    # Ending it again changes nothing.
    clock.advance(timedelta(hours=1))
    assert await campaigns.end(created.promotion_id) == ended
    assert await campaigns.get(created.promotion_id) == ended


async def test_unknown_promotions_are_not_found(campaigns: Campaigns) -> None:
    await refused(campaigns.get(uuid4()), NotFound, Reason.NOT_FOUND)
    await refused(campaigns.end(uuid4()), NotFound, Reason.NOT_FOUND)


async def test_bad_terms_and_unknown_merchants_create_nothing(
    ledger: Ledger, campaigns: Campaigns, clean_db: AsyncEngine, clock: FakeClock
) -> None:
    await ledger.partner("lamps")
    bad: list[tuple[dict[str, Any], set[str]]] = [
        ({"bp": 0}, {"cashback_basis_points"}),
        ({"bp": 10_001}, {"cashback_basis_points"}),
        ({"cap": 0}, {"max_cashback_per_payment.amount_minor"}),
        ({"budget": 0}, {"budget.amount_minor"}),
        ({"min_payment": 0}, {"min_payment_amount.amount_minor"}),
        ({"end": clock.now - timedelta(seconds=1)}, {"end_time"}),
        (
            {"start": clock.now + timedelta(days=2), "end": clock.now + timedelta(days=1)},
            {"end_time"},
        ),
        ({"merchants": ("lamps", "nobody")}, {"merchant_names"}),
    ]
    for change, fields in bad:
        with pytest.raises(InvalidArgument) as caught:
            await campaigns.create(**change)
        assert {v.field for v in caught.value.violations} == fields, change
    mixed = replace(campaigns.command(), budget=Money("EUR", 5))
    with pytest.raises(InvalidArgument) as caught:
        await services.create_promotion(mixed, campaigns.uow())
    assert {v.field for v in caught.value.violations} == {"max_cashback_per_payment.currency_code"}
    assert await count(clean_db, "SELECT count(*) FROM promotions") == 0


async def test_create_promotion_is_idempotent(campaigns: Campaigns, clean_db: AsyncEngine) -> None:
    cmd = campaigns.command()
    first = await services.create_promotion(cmd, campaigns.uow())
    assert await services.create_promotion(cmd, campaigns.uow()) == first
    await refused(
        campaigns.create(request_id=cmd.request_id, budget=20_000),
        FailedPrecondition,
        Reason.IDEMPOTENCY_KEY_REUSED,
    )
    assert await count(clean_db, "SELECT count(*) FROM promotions") == 1


async def test_promotions_list_newest_first_in_pages(
    campaigns: Campaigns, clock: FakeClock
) -> None:
    created: list[Promotion] = []
    for i in range(5):
        created.append(await campaigns.create(name=f"p{i}"))
        if i != 2:  # p2 and p3 are created in the same instant: the id breaks the tie
            clock.advance(timedelta(seconds=1))

    seen: list[UUID] = []
    before: tuple[datetime, UUID] | None = None
    pages = 0
    while True:
        page = await services.list_promotions(
            services.ListPromotions(caller=OPERATOR, page_size=2, before=before), campaigns.uow()
        )
        pages += 1
        seen += [p.promotion_id for p in page.promotions]
        before = page.next_before
        if before is None:
            break

    newest_first = sorted(created, key=lambda p: (p.created_at, p.promotion_id), reverse=True)
    assert seen == [p.promotion_id for p in newest_first]
    assert seen[0] == created[4].promotion_id
    assert set(seen[1:3]) == {created[2].promotion_id, created[3].promotion_id}
    assert pages == 3


# --- cashback on payment --------------------------------------------------------------------


async def test_a_qualifying_payment_earns_cashback_in_the_same_transaction(
    ledger: Ledger, shop: Shop, campaigns: Campaigns, clean_db: AsyncEngine
) -> None:
    merchant = await ledger.partner("lamps")
    alice, a = await funded_user(ledger, "alice", 10_000)
    promo = await campaigns.create(bp=1_000, cap=300, budget=10_000)
    order_id = await shop.order(merchant, 2_000)

    result = await shop.pay(alice, order_id, a)

    cashback = result.cashback_transaction
    assert cashback is not None
    assert (cashback.kind, cashback.status, cashback.amount) == (
        TransactionKind.CASHBACK,
        TransactionStatus.POSTED,
        Money("USD", 200),
    )
    assert (cashback.from_account_id, cashback.to_account_id) == (promo.funding_account_id, a)
    assert (cashback.promotion_id, cashback.order_id) == (promo.promotion_id, order_id)
    assert cashback.memo == "Spring 10% back"
    assert await ledger.balance(alice, a) == 10_000 - 2_000 + 200
    assert await promotions_balance(clean_db) == -200  # a system account: may go negative
    assert (await campaigns.get(promo.promotion_id)).spent == Money("USD", 200)
    kinds = [
        (t, p["transaction"]["kind"] if p.get("transaction") else None)
        for t, _, _, p in await events(clean_db)
    ]
    assert kinds[-3:] == [
        ("transaction_created", "payment"),
        ("transaction_created", "cashback"),
        ("order_updated", "payment"),
    ]
    assert await ledger_violations(clean_db) == []


@pytest.mark.parametrize(
    ("currency", "price", "bp", "cashback"),
    [
        ("JPY", 99, 100, 0),  # 0.99 yen: nothing
        ("JPY", 1_050, 100, 10),  # 10.5 yen -> 10
        ("USD", 1_999, 500, 99),  # 99.95 cents -> 99
        ("USD", 19, 500, 0),  # 0.95 cent: nothing
        ("KWD", 1_999, 250, 49),  # 49.975 fils -> 49
        ("KWD", 39, 250, 0),  # 0.975 fils: nothing
    ],
)
async def test_cashback_rounds_down_to_a_whole_minor_unit(
    ledger: Ledger,
    shop: Shop,
    campaigns: Campaigns,
    clean_db: AsyncEngine,
    currency: str,
    price: int,
    bp: int,
    cashback: int,
) -> None:
    merchant = await ledger.partner("lamps")
    alice, a = await funded_user(ledger, "alice", 100_000, currency)
    promo = await campaigns.create(bp=bp, cap=10**6, budget=10**6, currency=currency)

    result = await shop.pay(alice, await shop.order(merchant, price, currency), a)

    got = result.cashback_transaction
    assert (0 if got is None else got.amount.amount_minor) == cashback
    assert (await campaigns.get(promo.promotion_id)).spent == Money(currency, cashback)
    assert await ledger.balance(alice, a) == 100_000 - price + cashback
    assert await count(clean_db, "SELECT count(*) FROM transactions WHERE kind = 'cashback'") == (
        1 if cashback else 0
    )
    assert await ledger_violations(clean_db) == []


async def test_cap_and_budget_limit_the_cashback_until_nothing_is_left(
    ledger: Ledger, shop: Shop, campaigns: Campaigns, clean_db: AsyncEngine, clock: FakeClock
) -> None:
    merchant = await ledger.partner("lamps")
    alice, a = await funded_user(ledger, "alice", 100_000)
    promo = await campaigns.create(bp=1_000, cap=150, budget=400)

    paid = []
    for _ in range(4):
        result = await shop.pay(alice, await shop.order(merchant, 5_000), a)
        paid.append(
            0
            if result.cashback_transaction is None
            else result.cashback_transaction.amount.amount_minor
        )

    assert paid == [150, 150, 100, 0]  # capped, capped, the rest of the budget, nothing
    after = await campaigns.get(promo.promotion_id)
    assert after.spent == after.budget
    assert after.status_at(clock.now) is PromotionStatus.EXHAUSTED
    assert await ledger.balance(alice, a) == 100_000 - 4 * 5_000 + 400
    assert await ledger_violations(clean_db) == []


async def test_only_qualifying_payments_earn_cashback(
    ledger: Ledger, shop: Shop, campaigns: Campaigns, clean_db: AsyncEngine, clock: FakeClock
) -> None:
    lamps, rival = await ledger.partner("lamps"), await ledger.partner("rival")
    alice, a = await funded_user(ledger, "alice", 100_000)
    await campaigns.create(merchants=("lamps",), min_payment=1_000)
    await campaigns.create(bp=5_000, start=clock.now + timedelta(days=1))  # not yet started
    ended = await campaigns.create(bp=5_000)
    await campaigns.end(ended.promotion_id)
    await campaigns.create(bp=5_000, currency="EUR")

    async def cashback(merchant: Any, price: int) -> int:
        result = await shop.pay(alice, await shop.order(merchant, price), a)
        tx = result.cashback_transaction
        return 0 if tx is None else tx.amount.amount_minor

    assert await cashback(rival, 5_000) == 0  # another merchant
    assert await cashback(lamps, 999) == 0  # below the minimum
    assert await cashback(lamps, 1_000) == 100  # 10%, capped at 100
    clock.advance(timedelta(days=31))  # every USD promotion is over
    assert await cashback(lamps, 1_000) == 0
    assert await ledger_violations(clean_db) == []


async def test_the_promotion_paying_the_most_is_the_only_one_to_pay(
    ledger: Ledger, shop: Shop, campaigns: Campaigns
) -> None:
    merchant = await ledger.partner("lamps")
    alice, a = await funded_user(ledger, "alice", 100_000)
    low = await campaigns.create(bp=100, cap=1_000)  # 1% of 2000: 20
    capped = await campaigns.create(bp=2_000, cap=250)  # 20% is 400, capped at 250
    mid = await campaigns.create(bp=1_000, cap=1_000)  # 10%: 200

    result = await shop.pay(alice, await shop.order(merchant, 2_000), a)

    assert result.cashback_transaction is not None
    assert result.cashback_transaction.promotion_id == capped.promotion_id
    assert result.cashback_transaction.amount == Money("USD", 250)
    assert await ledger.balance(alice, a) == 100_000 - 2_000 + 250
    spent = [(await campaigns.get(p.promotion_id)).spent.amount_minor for p in (low, capped, mid)]
    assert spent == [0, 250, 0]


async def test_cashback_is_kept_after_a_full_refund(
    ledger: Ledger, shop: Shop, campaigns: Campaigns, clean_db: AsyncEngine
) -> None:
    merchant = await ledger.partner("lamps")
    alice, a = await funded_user(ledger, "alice", 10_000)
    await campaigns.create(bp=500, cap=1_000)
    order_id = await shop.order(merchant, 4_000)
    await shop.pay(alice, order_id, a)

    await shop.refund(merchant, order_id, 4_000)

    assert await ledger.balance(alice, a) == 10_000 + 200
    assert await ledger_violations(clean_db) == []


async def test_a_refused_payment_spends_no_budget(
    ledger: Ledger, shop: Shop, campaigns: Campaigns, clean_db: AsyncEngine
) -> None:
    merchant = await ledger.partner("lamps")
    alice, a = await funded_user(ledger, "alice", 500)
    await campaigns.create()
    order_id = await shop.order(merchant, 1_000)
    before = await state(clean_db)

    await refused(shop.pay(alice, order_id, a), FailedPrecondition, Reason.INSUFFICIENT_FUNDS)

    assert await state(clean_db) == before


async def test_a_payment_refused_for_a_paid_order_waits_on_no_promotion(
    ledger: Ledger, shop: Shop, campaigns: Campaigns, clean_db: AsyncEngine
) -> None:
    """Payments lock the promotions they may earn from, so a promotion for every merchant
    is locked by every payment in its currency. Paying an order that is already paid earns
    nothing and waits for none of them."""
    merchant = await ledger.partner("lamps")
    alice, a = await funded_user(ledger, "alice", 5_000)
    promotion = await campaigns.create()
    order_id = await shop.order(merchant, 1_000)
    await shop.pay(alice, order_id, a)

    async with clean_db.connect() as other_payment:
        await other_payment.execute(
            text("SELECT 1 FROM promotions WHERE promotion_id = :p FOR UPDATE"),
            {"p": promotion.promotion_id},
        )
        async with asyncio.timeout(5):
            await refused(
                shop.pay(alice, order_id, a), FailedPrecondition, Reason.ORDER_ALREADY_PAID
            )
        await other_payment.rollback()


async def test_a_frozen_promotions_account_pays_no_cashback_but_the_payment_goes_through(
    ledger: Ledger, shop: Shop, campaigns: Campaigns, clean_db: AsyncEngine
) -> None:
    merchant = await ledger.partner("lamps")
    alice, a = await funded_user(ledger, "alice", 10_000)
    promo = await campaigns.create()
    await freeze(clean_db, promo.funding_account_id)

    result = await shop.pay(alice, await shop.order(merchant, 1_000), a)

    assert result.cashback_transaction is None
    assert await ledger.balance(alice, a) == 9_000
    assert (await campaigns.get(promo.promotion_id)).spent == Money("USD", 0)


async def test_many_concurrent_payments_never_exceed_the_budget(
    ledger: Ledger, shop: Shop, campaigns: Campaigns, clean_db: AsyncEngine
) -> None:
    merchant = await ledger.partner("lamps")
    payers = [await funded_user(ledger, f"payer{i}", 5_000) for i in range(32)]
    # 10% of 1000 = 100 per payment; the budget covers 10.5 payments.
    promo = await campaigns.create(bp=1_000, cap=100, budget=1_050)
    orders = [await shop.order(merchant, 1_000) for _ in payers]

    results = await asyncio.gather(
        *(
            shop.pay(user, order_id, acc)
            for (user, acc), order_id in zip(payers, orders, strict=True)
        )
    )

    paid = sorted(
        (r.cashback_transaction.amount.amount_minor for r in results if r.cashback_transaction),
        reverse=True,
    )
    assert paid == [100] * 10 + [50]
    assert (await campaigns.get(promo.promotion_id)).spent == Money("USD", 1_050)
    assert await promotions_balance(clean_db) == -1_050
    total = await count(
        clean_db, "SELECT coalesce(sum(amount), 0) FROM transactions WHERE kind = 'cashback'"
    )
    assert total == 1_050
    assert await ledger_violations(clean_db) == []


class TickingClock(FakeClock):
    """Every reading is a millisecond later than the one before: distinct, ordered times."""

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


async def test_payments_racing_an_end_promotion_earn_cashback_only_before_it(
    ledger: Ledger, clean_db: AsyncEngine, clock: FakeClock
) -> None:
    ticking = TickingClock(clock.now)
    ticking_shop = Shop(lambda: services.UnitOfWork(clean_db, clock=ticking))
    ticking_campaigns = Campaigns(lambda: services.UnitOfWork(clean_db, clock=ticking), ticking)
    merchant = await ledger.partner("lamps")
    payers = [await funded_user(ledger, f"payer{i}", 5_000) for i in range(16)]
    promo = await ticking_campaigns.create(bp=1_000, cap=100, budget=100_000)
    orders = [await ticking_shop.order(merchant, 1_000) for _ in payers]

    pays = [ticking_shop.pay(u, o, acc) for (u, acc), o in zip(payers, orders, strict=True)]
    results, ended = await asyncio.gather(
        asyncio.gather(*pays), ticking_campaigns.end(promo.promotion_id)
    )

    earned = [r.cashback_transaction for r in results if r.cashback_transaction]
    assert (await ticking_campaigns.get(promo.promotion_id)).spent == Money(
        "USD", 100 * len(earned)
    )
    assert ended.ended_at is not None
    # Every cashback was decided before the promotion ended; none after.
    assert all(tx.created_at < ended.ended_at for tx in earned)
    late_user, late_account = await funded_user(ledger, "late", 5_000)
    late = await ticking_shop.pay(
        late_user, await ticking_shop.order(merchant, 1_000), late_account
    )
    assert late.cashback_transaction is None
    assert await ledger_violations(clean_db) == []


async def test_the_database_refuses_spending_beyond_the_budget_even_by_direct_sql(
    campaigns: Campaigns, clean_db: AsyncEngine
) -> None:
    promo = await campaigns.create(budget=500)
    with pytest.raises(IntegrityError, match="within_budget"):
        async with clean_db.begin() as conn:
            await conn.execute(text("UPDATE promotions SET spent = 501"))
    assert (await campaigns.get(promo.promotion_id)).spent == Money("USD", 0)
