"""Merchant orders, payments with cashback, refunds and promotions end to end over TLS/mTLS.

Every refusal is checked as a client SDK sees it (gRPC code + ErrorInfo reason), and that it
changed nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from grpc import aio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from wallet.v1 import (
    admin_pb2,
    ledger_pb2,
    partner_pb2,
    partner_pb2_grpc,
    wallet_pb2,
)

from tests.db.test_orders import FakeClock, state
from tests.e2e.conftest import Metadata, Wallet, seed
from tests.e2e.errors import RichError, rich_error
from tests.ledger_checks import ledger_violations
from wallet_server.config import Settings
from wallet_server.domain import SCOPE_MERCHANT
from wallet_server.security import DevPkiPaths, issue_certificate, partner_spiffe_id
from wallet_server.services import UnitOfWork, register_partner
from wallet_server.transport import create_server

FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def money(minor: int, currency: str = "USD") -> ledger_pb2.Money:
    return ledger_pb2.Money(currency_code=currency, amount_minor=minor)


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def rid() -> str:
    return str(uuid.uuid4())


async def refusal(call: Awaitable[object]) -> RichError:
    with pytest.raises(aio.AioRpcError) as caught:
        await call
    return rich_error(caught.value)


class Shop(Wallet):
    """The wallet fixture's clients, plus a second merchant and the server's fake clock."""

    clock: FakeClock
    rival_cert: tuple[Path, Path]

    @property
    def rival(self) -> partner_pb2_grpc.PartnerServiceAsyncStub:
        return partner_pb2_grpc.PartnerServiceStub(self._open(self.ports.mtls, *self.rival_cert))

    async def order(
        self, minor: int, currency: str = "USD", *, ttl_seconds: int = 600
    ) -> ledger_pb2.Order:
        response = await self.partner.CreateOrder(
            partner_pb2.CreateOrderRequest(
                request_id=rid(),
                amount=money(minor, currency),
                description="a desk lamp",
                merchant_reference="inv-42",
                ttl=duration_pb2.Duration(seconds=ttl_seconds),
            )
        )
        return response.order

    async def pay(
        self, who: Metadata, order_id: str, account_id: str, request_id: str | None = None
    ) -> wallet_pb2.PayOrderResponse:
        return await self.wallet.PayOrder(
            wallet_pb2.PayOrderRequest(
                request_id=request_id or rid(), order_id=order_id, from_account_id=account_id
            ),
            metadata=who,
        )

    async def refund(
        self, order_id: str, minor: int, currency: str = "USD"
    ) -> partner_pb2.RefundPaymentResponse:
        return await self.partner.RefundPayment(
            partner_pb2.RefundPaymentRequest(
                request_id=rid(), order_id=order_id, amount=money(minor, currency), reason="broken"
            )
        )

    async def available(self, who: Metadata, account_id: str) -> int:
        got = await self.wallet.GetAccount(
            wallet_pb2.GetAccountRequest(account_id=account_id), metadata=who
        )
        return got.account.available.amount_minor

    async def promotion(self, **fields: object) -> admin_pb2.Promotion:
        request = admin_pb2.CreatePromotionRequest(
            request_id=rid(),
            display_name="Lamp week",
            cashback_basis_points=1_000,
            max_cashback_per_payment=money(500),
            budget=money(100_000),
            end_time=ts(self.clock.now + timedelta(days=7)),
        )
        for name, value in fields.items():
            if isinstance(value, ledger_pb2.Money | timestamp_pb2.Timestamp):
                getattr(request, name).CopyFrom(value)
            elif isinstance(value, list):
                getattr(request, name).extend(value)
            else:
                setattr(request, name, value)
        return (await self.admin.CreatePromotion(request)).promotion


@pytest.fixture
async def shop(
    clean_db: AsyncEngine, settings: Settings, pki: DevPkiPaths, tmp_path: Path
) -> AsyncIterator[Shop]:
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    await seed(clean_db)
    await register_partner(UnitOfWork(clean_db), "rival", {SCOPE_MERCHANT})
    rival_cert, rival_key = tmp_path / "rival.pem", tmp_path / "rival-key.pem"
    issue_certificate(
        ca_cert_path=pki.ca_cert,
        ca_key_path=pki.ca_key,
        out_cert=rival_cert,
        out_key=rival_key,
        spiffe_id=partner_spiffe_id("rival"),
    )
    server, ports = create_server(settings, clean_db, clock=clock)
    await server.start()
    client = Shop(ports=ports, pki=pki, engine=clean_db)
    client.clock = clock
    client.rival_cert = (rival_cert, rival_key)
    try:
        yield client
    finally:
        await client.close()
        await server.stop(grace=1.0)


async def customer(
    shop: Shop, name: str, minor: int, currency: str = "USD"
) -> tuple[Metadata, str]:
    who = await shop.sign_up(name)
    account_id = await shop.open_account(who, currency)
    if minor:
        await shop.deposit(account_id, minor, currency)
    return who, account_id


# --- the happy path -------------------------------------------------------------------------


async def test_order_payment_with_cashback_then_refunds(shop: Shop) -> None:
    alice, a = await customer(shop, "alice", 10_000)
    promo = await shop.promotion(merchant_names=["demo"], min_payment_amount=money(1_000))
    assert promo.status == admin_pb2.PROMOTION_STATUS_ACTIVE
    assert promo.funding_account_id

    order = await shop.order(4_000, ttl_seconds=300)
    assert order.status == ledger_pb2.ORDER_STATUS_OPEN
    assert (order.merchant_name, order.merchant_reference) == ("demo", "inv-42")
    assert order.expire_time.ToDatetime(tzinfo=UTC) == shop.clock.now + timedelta(seconds=300)
    assert (order.refunded_amount.currency_code, order.refunded_amount.amount_minor) == ("USD", 0)

    seen = (
        await shop.wallet.GetMerchantOrder(
            wallet_pb2.GetMerchantOrderRequest(order_id=order.order_id), metadata=alice
        )
    ).order
    assert (seen.merchant_name, seen.merchant_display_name, seen.merchant_reference) == (
        "demo",
        "demo",
        "",
    )
    assert seen.amount.amount_minor == 4_000

    paid = await shop.pay(alice, order.order_id, a)
    assert paid.transaction.kind == ledger_pb2.TRANSACTION_KIND_PAYMENT
    assert paid.transaction.status == ledger_pb2.TRANSACTION_STATUS_POSTED
    assert paid.transaction.order_id == order.order_id
    assert sorted(p.amount.amount_minor for p in paid.transaction.postings) == [-4_000, 4_000]
    assert paid.order.status == ledger_pb2.ORDER_STATUS_PAID
    assert paid.order.payment_transaction_id == paid.transaction.transaction_id
    assert paid.order.HasField("pay_time")
    assert paid.order.merchant_reference == ""
    cashback = paid.cashback_transaction
    assert cashback.kind == ledger_pb2.TRANSACTION_KIND_CASHBACK
    assert (cashback.amount.amount_minor, cashback.to_account_id) == (400, a)
    assert (cashback.promotion_id, cashback.order_id) == (promo.promotion_id, order.order_id)
    assert cashback.from_account_id == promo.funding_account_id
    assert await shop.available(alice, a) == 10_000 - 4_000 + 400

    partial = await shop.refund(order.order_id, 1_500)
    assert partial.transaction.kind == ledger_pb2.TRANSACTION_KIND_REFUND
    assert (partial.transaction.to_account_id, partial.transaction.memo) == (a, "broken")
    assert partial.order.status == ledger_pb2.ORDER_STATUS_PARTIALLY_REFUNDED
    assert partial.order.refunded_amount.amount_minor == 1_500
    assert partial.order.merchant_reference == "inv-42"
    rest = await shop.refund(order.order_id, 2_500)
    assert rest.order.status == ledger_pb2.ORDER_STATUS_REFUNDED

    got = (await shop.partner.GetOrder(partner_pb2.GetOrderRequest(order_id=order.order_id))).order
    assert (got.status, got.refunded_amount.amount_minor) == (
        ledger_pb2.ORDER_STATUS_REFUNDED,
        4_000,
    )
    # The cashback stays with the payer.
    assert await shop.available(alice, a) == 10_000 + 400
    spent = (
        await shop.admin.GetPromotion(
            admin_pb2.GetPromotionRequest(promotion_id=promo.promotion_id)
        )
    ).promotion.spent
    assert (spent.currency_code, spent.amount_minor) == ("USD", 400)
    assert await ledger_violations(shop.engine) == []


async def test_promotions_list_newest_first_and_end(shop: Shop) -> None:
    made = []
    for i in range(3):
        made.append((await shop.promotion(display_name=f"p{i}")).promotion_id)
        shop.clock.advance(timedelta(seconds=1))
    pages, token, listed = 0, "", []
    while True:
        page = await shop.admin.ListPromotions(
            admin_pb2.ListPromotionsRequest(page_size=2, page_token=token)
        )
        listed += [p.promotion_id for p in page.promotions]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert (listed, pages) == (made[::-1], 2)

    ended = (
        await shop.admin.EndPromotion(
            admin_pb2.EndPromotionRequest(request_id=rid(), promotion_id=made[0])
        )
    ).promotion
    assert ended.status == admin_pb2.PROMOTION_STATUS_ENDED
    again = (
        await shop.admin.EndPromotion(
            admin_pb2.EndPromotionRequest(request_id=rid(), promotion_id=made[0])
        )
    ).promotion
    assert again == ended

    err = await refusal(
        shop.admin.ListPromotions(admin_pb2.ListPromotionsRequest(page_token="garbage"))
    )
    assert (err.code, err.reason) == (INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert "page_token" in err.violations


# --- refusals -------------------------------------------------------------------------------


async def test_create_order_refuses_bad_input(shop: Shop) -> None:
    base = partner_pb2.CreateOrderRequest(request_id=rid(), amount=money(100))
    cases: list[tuple[partner_pb2.CreateOrderRequest, str]] = []

    def case(field: str, **changes: object) -> None:
        request = partner_pb2.CreateOrderRequest()
        request.CopyFrom(base)
        for name, value in changes.items():
            if isinstance(
                value, ledger_pb2.Money | timestamp_pb2.Timestamp | duration_pb2.Duration
            ):
                getattr(request, name).CopyFrom(value)
            elif value is None:
                request.ClearField(name)  # type: ignore[arg-type]
            else:
                setattr(request, name, value)
        cases.append((request, field))

    case("amount", amount=None)
    case("amount.amount_minor", amount=money(0))
    case("amount.currency_code", amount=money(100, "XYZ"))
    case("description", description="x" * 501)
    case("merchant_reference", merchant_reference="x" * 129)
    case("expire_time", expire_time=ts(shop.clock.now - timedelta(seconds=1)))
    case("expire_time", expire_time=ts(shop.clock.now + timedelta(days=7, seconds=1)))
    case("ttl", ttl=duration_pb2.Duration(seconds=8 * 24 * 3600))
    case("ttl", ttl=duration_pb2.Duration(seconds=-1))
    case("request_id", request_id="not-a-uuid")

    for request, field in cases:
        err = await refusal(shop.partner.CreateOrder(request))
        assert (err.code, err.reason) == (INVALID_ARGUMENT, "INVALID_ARGUMENT"), field
        assert field in err.violations, (field, err.violations)
    async with shop.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM orders"))).scalar_one() == 0


async def test_orders_are_private_to_their_merchant(shop: Shop) -> None:
    order = await shop.order(100)
    alice = await shop.sign_up("alice")
    for call in (
        shop.rival.GetOrder(partner_pb2.GetOrderRequest(order_id=order.order_id)),
        shop.partner.GetOrder(partner_pb2.GetOrderRequest(order_id=rid())),
        shop.wallet.GetMerchantOrder(
            wallet_pb2.GetMerchantOrderRequest(order_id=rid()), metadata=alice
        ),
    ):
        err = await refusal(call)
        assert (err.code, err.reason, err.domain) == (NOT_FOUND, "NOT_FOUND", "wallet.v1")


async def test_every_payment_refusal_over_grpc_changes_nothing(shop: Shop) -> None:
    alice, a = await customer(shop, "alice", 1_000)
    a_eur = await shop.open_account(alice, "EUR")
    bob, b = await customer(shop, "bob", 5_000)
    carol, c = await customer(shop, "carol", 5_000)
    async with shop.engine.begin() as conn:
        await conn.execute(
            text("UPDATE accounts SET frozen = true WHERE account_id = :a"), {"a": c}
        )
    await shop.promotion()  # a refused payment must not spend its budget either
    order = await shop.order(2_000)
    paid_order = await shop.order(100)
    await shop.pay(bob, paid_order.order_id, b)
    expiring = await shop.order(100, ttl_seconds=60)
    shop.clock.advance(timedelta(seconds=60))
    before = await state(shop.engine)

    cases = [
        (shop.pay(alice, rid(), a), NOT_FOUND, "NOT_FOUND"),
        (shop.pay(alice, order.order_id, b), NOT_FOUND, "NOT_FOUND"),  # Bob's account
        (shop.pay(alice, order.order_id, a_eur), FAILED_PRECONDITION, "CURRENCY_MISMATCH"),
        (shop.pay(alice, order.order_id, a), FAILED_PRECONDITION, "INSUFFICIENT_FUNDS"),
        (shop.pay(carol, order.order_id, c), FAILED_PRECONDITION, "ACCOUNT_FROZEN"),
        (shop.pay(alice, paid_order.order_id, a), FAILED_PRECONDITION, "ORDER_ALREADY_PAID"),
        (shop.pay(bob, expiring.order_id, b), FAILED_PRECONDITION, "ORDER_EXPIRED"),
    ]
    for call, code, reason in cases:
        err = await refusal(call)
        assert (err.code, err.reason, err.domain) == (code, reason, "wallet.v1"), reason

    assert await state(shop.engine) == before
    expired = (
        await shop.partner.GetOrder(partner_pb2.GetOrderRequest(order_id=expiring.order_id))
    ).order
    assert expired.status == ledger_pb2.ORDER_STATUS_EXPIRED
    err = await refusal(
        shop.wallet.PayOrder(
            wallet_pb2.PayOrderRequest(request_id=rid(), order_id="x", from_account_id=a),
            metadata=alice,
        )
    )
    assert (err.code, set(err.violations)) == (INVALID_ARGUMENT, {"order_id"})
    assert await ledger_violations(shop.engine) == []


async def test_every_refund_refusal_over_grpc_changes_nothing(shop: Shop) -> None:
    alice, a = await customer(shop, "alice", 5_000)
    unpaid = await shop.order(1_000)
    order = await shop.order(1_000)
    await shop.pay(alice, order.order_id, a)
    await shop.refund(order.order_id, 300)
    before = await state(shop.engine)

    def refund(
        stub: partner_pb2_grpc.PartnerServiceAsyncStub, order_id: str, amount: ledger_pb2.Money
    ) -> Awaitable[object]:
        return stub.RefundPayment(
            partner_pb2.RefundPaymentRequest(request_id=rid(), order_id=order_id, amount=amount)
        )

    cases = [
        (refund(shop.partner, rid(), money(1)), NOT_FOUND, "NOT_FOUND"),
        (refund(shop.rival, order.order_id, money(1)), NOT_FOUND, "NOT_FOUND"),
        (
            refund(shop.partner, unpaid.order_id, money(1)),
            FAILED_PRECONDITION,
            "FAILED_PRECONDITION",
        ),
        (
            refund(shop.partner, order.order_id, money(1, "EUR")),
            FAILED_PRECONDITION,
            "CURRENCY_MISMATCH",
        ),
        (
            refund(shop.partner, order.order_id, money(701)),
            FAILED_PRECONDITION,
            "REFUND_EXCEEDS_PAYMENT",
        ),
        (refund(shop.partner, order.order_id, money(0)), INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    ]
    for call, code, reason in cases:
        err = await refusal(call)
        assert (err.code, err.reason) == (code, reason), reason

    assert await state(shop.engine) == before
    assert await shop.available(alice, a) == 4_300


async def test_promotion_admin_refusals(shop: Shop) -> None:
    cases: list[tuple[dict[str, object], str]] = [
        ({"cashback_basis_points": 0}, "cashback_basis_points"),
        ({"cashback_basis_points": 10_001}, "cashback_basis_points"),
        ({"budget": money(100, "EUR")}, "max_cashback_per_payment.currency_code"),
        ({"max_cashback_per_payment": money(0)}, "max_cashback_per_payment.amount_minor"),
        ({"budget": money(100, "ABC")}, "budget.currency_code"),
        ({"end_time": ts(shop.clock.now - timedelta(seconds=1))}, "end_time"),
        ({"start_time": ts(shop.clock.now + timedelta(days=9))}, "end_time"),
        ({"display_name": ""}, "display_name"),
        ({"merchant_names": ["nobody"]}, "merchant_names"),
    ]
    for fields, field in cases:
        err = await refusal(shop.promotion(**fields))
        assert (err.code, err.reason) == (INVALID_ARGUMENT, "INVALID_ARGUMENT"), field
        assert field in err.violations, (field, err.violations)
    missing_end = admin_pb2.CreatePromotionRequest(
        request_id=rid(),
        display_name="x",
        cashback_basis_points=100,
        max_cashback_per_payment=money(1),
        budget=money(1),
    )
    err = await refusal(shop.admin.CreatePromotion(missing_end))
    assert "end_time" in err.violations
    for call in (
        shop.admin.GetPromotion(admin_pb2.GetPromotionRequest(promotion_id=rid())),
        shop.admin.EndPromotion(
            admin_pb2.EndPromotionRequest(request_id=rid(), promotion_id=rid())
        ),
    ):
        err = await refusal(call)
        assert (err.code, err.reason) == (NOT_FOUND, "NOT_FOUND")
    async with shop.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM promotions"))).scalar_one() == 0


# --- idempotency and concurrency ------------------------------------------------------------


async def test_pay_order_is_idempotent(shop: Shop) -> None:
    alice, a = await customer(shop, "alice", 5_000)
    order, other = await shop.order(1_000), await shop.order(1_000)
    key = rid()
    first = await shop.pay(alice, order.order_id, a, request_id=key)
    again = await shop.pay(alice, order.order_id, a, request_id=key)
    assert again == first
    err = await refusal(shop.pay(alice, other.order_id, a, request_id=key))
    assert (err.code, err.reason) == (FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED")
    assert await shop.available(alice, a) == 4_000


async def test_concurrent_payers_over_grpc_exactly_one_pays(shop: Shop) -> None:
    payers = [await customer(shop, f"payer{i}", 3_000) for i in range(8)]
    await shop.promotion(budget=money(150), max_cashback_per_payment=money(100))
    order = await shop.order(2_000)

    async def attempt(who: Metadata, account_id: str) -> str:
        try:
            await shop.pay(who, order.order_id, account_id)
        except aio.AioRpcError as exc:
            return rich_error(exc).reason
        return "OK"

    outcomes = await asyncio.gather(*(attempt(w, acc) for w, acc in payers))

    assert sorted(outcomes) == ["OK"] + ["ORDER_ALREADY_PAID"] * 7
    balances = sorted([await shop.available(w, acc) for w, acc in payers])
    assert balances == [3_000 - 2_000 + 100] + [3_000] * 7
    assert await ledger_violations(shop.engine) == []
