"""The hot-account mix: every deposit comes from ONE partner settlement account and every
payment goes to ONE merchant's settlement account.

Each slot alternates between its two kinds of operation, so the mix is half and half:

* ``deposit``: ``PartnerService.Deposit`` of 1 minor unit by the demo partner (mutual TLS)
  into a random benchmark account; one RPC, debits the demo partner's settlement account.
* ``payment``: the merchant partner creates a 1-minor-unit order
  (``PartnerService.CreateOrder``, mutual TLS as the merchant), then the slot's user pays it
  (``WalletService.PayOrder``, bearer token); two RPCs timed together as one operation,
  credits the merchant's settlement account.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from grpc import aio
from wallet.v1 import partner_pb2, partner_pb2_grpc, wallet_pb2, wallet_pb2_grpc

from bench.client import DEMO_PARTNER, Holder, Target, bearer, close, connect, usd
from bench.loop import Done, LoadResult, Operation, UnexpectedResult, Window, closed_loop

MERCHANT = "bench-shop"  # partner name; its certificate stem is "partner-bench-shop"
MERCHANT_IDENTITY = f"partner-{MERCHANT}"


@dataclass(frozen=True)
class HotTask:
    target: Target
    in_flight: int
    channels: int
    window: Window
    payers: tuple[Holder, ...]  # one per slot where there are enough
    deposit_destinations: tuple[str, ...]


@dataclass(frozen=True)
class Stubs:
    depositor: list[partner_pb2_grpc.PartnerServiceAsyncStub]
    merchant: list[partner_pb2_grpc.PartnerServiceAsyncStub]
    wallet: list[wallet_pb2_grpc.WalletServiceAsyncStub]


def run_hot(task: HotTask) -> LoadResult:
    return asyncio.run(_hot(task))


def deposit_step(stubs: Stubs, task: HotTask) -> Callable[[int], Awaitable[Done]]:
    rng = random.Random()  # noqa: S311 - picks destinations, not secrets

    async def deposit(slot: int) -> Done:
        await stubs.depositor[slot % len(stubs.depositor)].Deposit(
            partner_pb2.DepositRequest(
                request_id=str(uuid.uuid4()),
                account_id=rng.choice(task.deposit_destinations),
                amount=usd(1),
                external_reference="bench",
            )
        )
        return Done(kind="deposit")

    return deposit


def payment_step(stubs: Stubs, task: HotTask) -> Callable[[int], Awaitable[Done]]:
    async def payment(slot: int) -> Done:
        payer = task.payers[slot % len(task.payers)]
        created = await stubs.merchant[slot % len(stubs.merchant)].CreateOrder(
            partner_pb2.CreateOrderRequest(
                request_id=str(uuid.uuid4()), amount=usd(1), description="bench"
            )
        )
        paid = await stubs.wallet[slot % len(stubs.wallet)].PayOrder(
            wallet_pb2.PayOrderRequest(
                request_id=str(uuid.uuid4()),
                order_id=created.order.order_id,
                from_account_id=payer.account_id,
            ),
            metadata=bearer(payer),
        )
        if not paid.transaction.transaction_id:
            raise UnexpectedResult("PayOrder answered without a transaction")
        return Done(kind="payment")

    return payment


def mix_operation(stubs: Stubs, task: HotTask) -> Operation:
    steps = (deposit_step(stubs, task), payment_step(stubs, task))
    turns = [slot % 2 for slot in range(task.in_flight)]  # half the slots start with each

    async def call(slot: int) -> Done:
        step = steps[turns[slot]]
        turns[slot] ^= 1
        return await step(slot)

    return call


async def _hot(task: HotTask) -> LoadResult:
    public = await connect(task.target, task.channels)
    depositor = await connect(task.target, task.channels, identity=DEMO_PARTNER)
    merchant = await connect(task.target, task.channels, identity=MERCHANT_IDENTITY)
    stubs = Stubs(
        depositor=[partner_pb2_grpc.PartnerServiceStub(ch) for ch in depositor],
        merchant=[partner_pb2_grpc.PartnerServiceStub(ch) for ch in merchant],
        wallet=[wallet_pb2_grpc.WalletServiceStub(ch) for ch in public],
    )
    channels: list[aio.Channel] = [*public, *depositor, *merchant]
    try:
        return await closed_loop(mix_operation(stubs, task), task.in_flight, task.window)
    finally:
        await close(channels)
