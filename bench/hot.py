"""The payment mixes: the hot-account mix and the same mix spread over many partners.

Each slot alternates between its two kinds of operation, so the mix is half and half:

* ``deposit``: ``PartnerService.Deposit`` of 1 minor unit by a depositing partner (mutual TLS)
  into a random benchmark account; one RPC, debits that partner's settlement account.
* ``payment``: a merchant partner creates a 1-minor-unit order (``PartnerService.CreateOrder``,
  mutual TLS as the merchant), then the slot's user pays it (``WalletService.PayOrder``,
  bearer token); two RPCs timed together as one operation, credits that merchant's settlement
  account.

The hot mix has ONE depositing partner (the demo partner) and ONE merchant, so every deposit
debits one settlement account and every payment credits one. The spread mix picks, per
operation, a random partner among several depositing partners and a random merchant among
several merchants.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeAlias

from grpc import aio
from wallet.v1 import partner_pb2, partner_pb2_grpc, wallet_pb2, wallet_pb2_grpc

from bench.client import DEMO_PARTNER, Holder, Target, bearer, close, connect, usd
from bench.loop import Done, LoadResult, Operation, UnexpectedResult, Window, closed_loop

MERCHANT = "bench-shop"  # partner name; its certificate stem is "partner-bench-shop"
MERCHANT_IDENTITY = f"partner-{MERCHANT}"


def extra_depositors(count: int) -> tuple[str, ...]:
    """Partner names of the spread mix's depositing partners besides the demo partner."""
    return tuple(f"bench-bank-{i}" for i in range(1, count + 1))


def extra_merchants(count: int) -> tuple[str, ...]:
    """Partner names of the spread mix's merchants besides ``MERCHANT``."""
    return tuple(f"{MERCHANT}-{i}" for i in range(1, count + 1))


def identity(partner: str) -> str:
    """Certificate stem of a partner registered by name."""
    return f"partner-{partner}"


@dataclass(frozen=True)
class HotTask:
    target: Target
    in_flight: int
    channels: int  # per kind of caller; split among the partners of that kind
    window: Window
    payers: tuple[Holder, ...]  # one per slot where there are enough
    deposit_destinations: tuple[str, ...]
    depositors: tuple[str, ...] = (DEMO_PARTNER,)  # certificate stems; one picked per deposit
    merchants: tuple[str, ...] = (MERCHANT_IDENTITY,)  # certificate stems; one per payment


# Per partner, per channel; the async stub class exists only in the type stubs.
PartnerStubs: TypeAlias = "list[list[partner_pb2_grpc.PartnerServiceAsyncStub]]"


@dataclass(frozen=True)
class Stubs:
    depositors: PartnerStubs
    merchants: PartnerStubs
    wallet: list[wallet_pb2_grpc.WalletServiceAsyncStub]


def run_hot(task: HotTask) -> LoadResult:
    return asyncio.run(_hot(task))


def deposit_step(
    stubs: Stubs, task: HotTask, rng: random.Random
) -> Callable[[int], Awaitable[Done]]:
    async def deposit(slot: int) -> Done:
        partner = rng.choice(stubs.depositors)
        await partner[slot % len(partner)].Deposit(
            partner_pb2.DepositRequest(
                request_id=str(uuid.uuid4()),
                account_id=rng.choice(task.deposit_destinations),
                amount=usd(1),
                external_reference="bench",
            )
        )
        return Done(kind="deposit")

    return deposit


def payment_step(
    stubs: Stubs, task: HotTask, rng: random.Random
) -> Callable[[int], Awaitable[Done]]:
    async def payment(slot: int) -> Done:
        payer = task.payers[slot % len(task.payers)]
        merchant = rng.choice(stubs.merchants)
        created = await merchant[slot % len(merchant)].CreateOrder(
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
    rng = random.Random()  # noqa: S311 - picks partners and destinations, not secrets
    steps = (deposit_step(stubs, task, rng), payment_step(stubs, task, rng))
    turns = [slot % 2 for slot in range(task.in_flight)]  # half the slots start with each

    async def call(slot: int) -> Done:
        step = steps[turns[slot]]
        turns[slot] ^= 1
        return await step(slot)

    return call


async def _hot(task: HotTask) -> LoadResult:
    opened: list[aio.Channel] = []

    async def partner_stubs(identities: tuple[str, ...]) -> PartnerStubs:
        """``task.channels`` connections split among the partners, at least one each."""
        each = max(1, task.channels // len(identities))
        stubs: PartnerStubs = []
        for who in identities:
            group = await connect(task.target, each, identity=who)
            opened.extend(group)
            stubs.append([partner_pb2_grpc.PartnerServiceStub(ch) for ch in group])
        return stubs

    try:
        public = await connect(task.target, task.channels)
        opened.extend(public)
        stubs = Stubs(
            depositors=await partner_stubs(task.depositors),
            merchants=await partner_stubs(task.merchants),
            wallet=[wallet_pb2_grpc.WalletServiceStub(ch) for ch in public],
        )
        return await closed_loop(mix_operation(stubs, task), task.in_flight, task.window)
    finally:
        await close(opened)
