"""Many clients at once through TLS gRPC: transfers, payments, refunds, withdrawals and the
same request sent concurrently. Afterwards money is conserved, no wallet is negative, every
acknowledged operation is in the ledger exactly once, and VerifyLedger finds nothing."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from typing import Any

from grpc import aio
from sqlalchemy import text
from wallet.v1 import admin_pb2, ledger_pb2, partner_pb2, wallet_pb2

from tests.e2e.conftest import Metadata, Wallet
from tests.e2e.errors import rich_error
from tests.e2e.test_withdrawals import withdrawal_request
from tests.ledger_checks import ledger_violations

CLIENTS = 32
OPERATIONS_PER_CLIENT = 12
USERS = 5
START_BALANCE = 40_000

# Refusals the random mix may legitimately meet; anything else fails the test.
EXPECTED_REFUSALS = {"INSUFFICIENT_FUNDS", "REFUND_EXCEEDS_PAYMENT", "FAILED_PRECONDITION"}


def usd(minor: int) -> ledger_pb2.Money:
    return ledger_pb2.Money(currency_code="USD", amount_minor=minor)


async def test_thirty_two_clients_keep_the_ledger_right(wallet: Wallet) -> None:
    users: list[Metadata] = [await wallet.sign_up(f"user{i}") for i in range(USERS)]
    accounts = [await wallet.open_account(u) for u in users]
    for account in accounts:
        await wallet.deposit(account, START_BALANCE)
    user_stub, partner_stub = wallet.wallet, wallet.partner
    acknowledged: Counter[str] = Counter()  # transaction id -> times acknowledged
    kinds: Counter[str] = Counter()
    refusals: Counter[str] = Counter()
    paid_orders: list[tuple[str, int]] = []

    async def attempt(call: Any) -> Any:
        try:
            return await call
        except aio.AioRpcError as exc:
            failure = rich_error(exc)
        assert failure.reason in EXPECTED_REFUSALS, failure
        refusals[failure.reason] += 1
        return None

    def note(response: Any, kind: str) -> None:
        if response is not None:
            acknowledged[response.transaction.transaction_id] += 1
            kinds[kind] += 1

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(OPERATIONS_PER_CLIENT):
            who = rng.randrange(USERS)
            other = (who + rng.randrange(1, USERS)) % USERS
            amount = rng.randint(1, 3_000)
            action = rng.choice(["transfer", "duplicate", "pay", "refund", "withdraw"])
            if action in ("transfer", "duplicate"):
                request = wallet_pb2.TransferRequest(
                    request_id=str(uuid.uuid4()),
                    from_account_id=accounts[who],
                    to_account_id=accounts[other],
                    amount=usd(amount),
                )
                copies = 3 if action == "duplicate" else 1
                results = await asyncio.gather(
                    *(
                        attempt(user_stub.Transfer(request, metadata=users[who]))
                        for _ in range(copies)
                    )
                )
                ids = {r.transaction.transaction_id if r else None for r in results}
                assert len(ids) == 1  # every copy got the same answer
                note(results[0], "transfer")
            elif action == "pay":
                order = await partner_stub.CreateOrder(
                    partner_pb2.CreateOrderRequest(
                        request_id=str(uuid.uuid4()), amount=usd(amount), description="mix"
                    )
                )
                paid = await attempt(
                    user_stub.PayOrder(
                        wallet_pb2.PayOrderRequest(
                            request_id=str(uuid.uuid4()),
                            order_id=order.order.order_id,
                            from_account_id=accounts[who],
                        ),
                        metadata=users[who],
                    )
                )
                note(paid, "payment")
                if paid is not None:
                    paid_orders.append((order.order.order_id, amount))
            elif action == "refund" and paid_orders:
                order_id, paid_amount = rng.choice(paid_orders)
                refunded = await attempt(
                    partner_stub.RefundPayment(
                        partner_pb2.RefundPaymentRequest(
                            request_id=str(uuid.uuid4()),
                            order_id=order_id,
                            amount=usd(rng.randint(1, paid_amount)),
                            reason="mix",
                        )
                    )
                )
                note(refunded, "refund")
            elif action == "withdraw":
                held = await attempt(
                    user_stub.RequestWithdrawal(
                        withdrawal_request(accounts[who], amount), metadata=users[who]
                    )
                )
                if held is None:
                    continue
                note(held, "withdrawal")
                finish = partner_pb2.CompleteWithdrawalRequest(
                    request_id=str(uuid.uuid4()),
                    transaction_id=held.transaction.transaction_id,
                )
                if rng.random() < 0.5:
                    await partner_stub.CompleteWithdrawal(finish)
                else:
                    await partner_stub.FailWithdrawal(
                        partner_pb2.FailWithdrawalRequest(
                            request_id=finish.request_id,
                            transaction_id=finish.transaction_id,
                            failure_message="mix",
                        )
                    )

    await asyncio.gather(*(client(seed) for seed in range(CLIENTS)))

    assert sum(kinds.values()) > CLIENTS * OPERATIONS_PER_CLIENT // 3  # the mix did run
    assert all(count == 1 for count in acknowledged.values())
    async with wallet.engine.connect() as conn:
        stored = Counter((await conn.execute(text("SELECT kind FROM transactions"))).scalars())
        in_ledger = set(
            str(t)
            for t in (await conn.execute(text("SELECT transaction_id FROM transactions"))).scalars()
        )
    assert set(acknowledged) <= in_ledger
    for kind, count in kinds.items():
        assert stored[kind] == count, kind
    assert await ledger_violations(wallet.engine) == []
    report = await wallet.admin.VerifyLedger(admin_pb2.VerifyLedgerRequest())
    assert list(report.violations) == []
