"""Streams: many idle ``WatchAccount`` streams, a few active ones, and event delivery latency.

Each client process, with its own users (a user may only watch their own accounts):

1. opens a EUR account per user (idle accounts) and a GBP account for each of its first
   ``active`` users (active accounts), and tops each up once through the demo partner, so
   every watched account has exactly one stored event: a stream's first message proves it
   is open and subscribed. Nothing else in the benchmark uses EUR or GBP, so idle streams
   get no further event and active ones only those of this scenario;
2. opens its share of the idle streams on the EUR accounts, round-robin over the users and
   over its channels, then one active stream per GBP account;
3. reports "open" to the parent (which reads the server's memory) and waits for its go;
4. sends 1-minor-unit GBP Transfers between its active accounts at a fixed rate (bounded
   in-flight), notes when each was sent and when its OK came back, and when its event
   reaches each watching stream (payer's and payee's);
5. waits ``drain_s`` for late events, reports "done", waits for the parent, closes all.

Delivery latency is measured in the process that sent the Transfer, on one monotonic clock:
``after_ok`` is event arrival minus the moment the Transfer's OK response arrived (0 when the
event came first, which is counted), ``from_send`` is arrival minus the moment the call was
sent. An event not delivered within the drain is an error.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from grpc import aio
from wallet.v1 import ledger_pb2, partner_pb2, partner_pb2_grpc, wallet_pb2, wallet_pb2_grpc

from bench.client import DEMO_PARTNER, Holder, Target, bearer, close, connect
from bench.loop import error_key

IDLE_CURRENCY = "EUR"
ACTIVE_CURRENCY = "GBP"
ACTIVE_FUNDS_MINOR = 100_000_000
OPEN_CONCURRENCY = 128  # streams being opened at once per process
SETUP_CONCURRENCY = 16


@dataclass(frozen=True)
class Control:
    """Multiprocessing manager proxies shared with the parent."""

    reports: Any  # queue: ("open", pid) then ("done", pid)
    proceed: Any  # event: the parent has measured the open streams; start sending
    release: Any  # event: the parent has measured the end; close the streams
    timeout_s: float


@dataclass(frozen=True)
class StreamTask:
    target: Target
    holders: tuple[Holder, ...]
    idle: int
    active: int
    channels: int
    rate_per_s: float
    max_in_flight: int
    warmup_s: float
    duration_s: float
    drain_s: float
    control: Control


@dataclass
class StreamResult:
    idle_opened: int = 0
    active_opened: int = 0
    open_s: float = 0.0
    idle_messages: int = 0  # messages on idle streams after their first one (expected 0)
    transfers: int = 0  # sent inside the measured window and answered OK
    deliveries: int = 0
    missing: int = 0
    before_ok: int = 0  # deliveries that arrived before the Transfer's OK response
    after_ok_ms: list[float] = field(default_factory=list)
    from_send_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    window_s: float = 0.0


@dataclass(frozen=True)
class Sent:
    transaction_id: str
    sent_at: float  # perf_counter
    ok_at: float
    measured: bool


class Watchers:
    """The open streams of one process and what arrived on them."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []
        self.arrivals: dict[str, list[float]] = {}  # transaction id -> perf_counter times
        self.idle_messages = 0
        self.errors: Counter[str] = Counter()
        self.closing = False

    async def _read(self, call: Any, opened: asyncio.Event, *, active: bool) -> None:
        try:
            async for message in call:
                now = time.perf_counter()
                if active:
                    tx_id = message.event.transaction.transaction_id
                    self.arrivals.setdefault(tx_id, []).append(now)
                elif opened.is_set():
                    self.idle_messages += 1
                opened.set()
        except aio.AioRpcError as exc:
            if not self.closing:
                self.errors[f"stream: {error_key(exc)}"] += 1
        else:
            if not self.closing:
                self.errors["stream ended by the server"] += 1

    async def open(
        self,
        stub: wallet_pb2_grpc.WalletServiceAsyncStub,
        holder: Holder,
        account_id: str,
        *,
        active: bool,
        timeout_s: float,
    ) -> bool:
        """Open one stream; True once its first (stored) event arrived."""
        call = stub.WatchAccount(
            wallet_pb2.WatchAccountRequest(account_id=account_id), metadata=bearer(holder)
        )
        opened = asyncio.Event()
        self.tasks.append(asyncio.create_task(self._read(call, opened, active=active)))
        try:
            await asyncio.wait_for(opened.wait(), timeout_s)
        except TimeoutError:
            self.errors[f"stream: no first event within {timeout_s:.0f}s"] += 1
            return False
        return True

    async def close(self) -> None:
        self.closing = True
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def run_streams(task: StreamTask) -> StreamResult:
    return asyncio.run(_streams(task))


@dataclass(frozen=True)
class Watched:
    holder: Holder
    account_id: str


async def open_funded(
    wallet: wallet_pb2_grpc.WalletServiceAsyncStub,
    partner: partner_pb2_grpc.PartnerServiceAsyncStub,
    holder: Holder,
    amount: ledger_pb2.Money,
) -> Watched:
    """A new account of the holder in ``amount``'s currency, topped up with ``amount``."""
    opened = await wallet.OpenAccount(
        wallet_pb2.OpenAccountRequest(
            request_id=str(uuid.uuid4()), currency_code=amount.currency_code
        ),
        metadata=bearer(holder),
    )
    account_id = opened.account.account_id
    await partner.Deposit(
        partner_pb2.DepositRequest(
            request_id=str(uuid.uuid4()),
            account_id=account_id,
            amount=amount,
            external_reference="bench",
        )
    )
    return Watched(holder, account_id)


async def prepare_accounts(task: StreamTask) -> tuple[list[Watched], list[Watched]]:
    """Idle accounts (EUR, one per user) and active ones (GBP, the first ``active`` users)."""
    public = await connect(task.target, 1)
    partner_ch = await connect(task.target, 1, identity=DEMO_PARTNER)
    wallet = wallet_pb2_grpc.WalletServiceStub(public[0])
    partner = partner_pb2_grpc.PartnerServiceStub(partner_ch[0])
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(holder: Holder, amount: ledger_pb2.Money) -> Watched:
        async with gate:
            return await open_funded(wallet, partner, holder, amount)

    idle = ledger_pb2.Money(currency_code=IDLE_CURRENCY, amount_minor=1)
    funds = ledger_pb2.Money(currency_code=ACTIVE_CURRENCY, amount_minor=ACTIVE_FUNDS_MINOR)
    try:
        idle_accounts = await asyncio.gather(*(one(h, idle) for h in task.holders))
        active = await asyncio.gather(*(one(h, funds) for h in task.holders[: task.active]))
        return list(idle_accounts), list(active)
    finally:
        await close([*public, *partner_ch])


async def open_streams(
    watchers: Watchers,
    stubs: list[wallet_pb2_grpc.WalletServiceAsyncStub],
    task: StreamTask,
    accounts: tuple[list[Watched], list[Watched]],
) -> tuple[int, int]:
    """Open the idle streams, then the active ones; returns how many of each opened."""
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    timeout = task.control.timeout_s / 2
    idle_accounts, active_accounts = accounts

    async def one(number: int, watched: Watched, active: bool) -> bool:
        async with gate:
            stub = stubs[number % len(stubs)]
            return await watchers.open(
                stub, watched.holder, watched.account_id, active=active, timeout_s=timeout
            )

    count = len(idle_accounts)
    idle = await asyncio.gather(
        *(one(i, idle_accounts[i % count], False) for i in range(task.idle))
    )
    active = await asyncio.gather(*(one(i, w, True) for i, w in enumerate(active_accounts)))
    return sum(idle), sum(active)


async def send_transfers(
    stubs: list[wallet_pb2_grpc.WalletServiceAsyncStub],
    task: StreamTask,
    watched: list[Watched],
    errors: Counter[str],
) -> list[Sent]:
    """Transfers between the active accounts at ``rate_per_s``, through warm-up and window."""
    one_unit = ledger_pb2.Money(currency_code=ACTIVE_CURRENCY, amount_minor=1)
    rng = random.Random()  # noqa: S311 - picks accounts, not secrets
    gate = asyncio.Semaphore(task.max_in_flight)
    sent: list[Sent] = []
    started = time.perf_counter()
    measure_from, measure_to = started + task.warmup_s, started + task.warmup_s + task.duration_s

    async def one(number: int) -> None:
        payer, payee = rng.sample(watched, 2)
        t0 = time.perf_counter()
        try:
            response = await stubs[number % len(stubs)].Transfer(
                wallet_pb2.TransferRequest(
                    request_id=str(uuid.uuid4()),
                    from_account_id=payer.account_id,
                    to_account_id=payee.account_id,
                    amount=one_unit,
                ),
                metadata=bearer(payer.holder),
            )
        except aio.AioRpcError as exc:
            errors[f"Transfer: {error_key(exc)}"] += 1
        else:
            measured = measure_from <= t0 <= measure_to
            sent.append(
                Sent(response.transaction.transaction_id, t0, time.perf_counter(), measured)
            )
        finally:
            gate.release()

    pending: list[asyncio.Task[None]] = []
    number = 0
    while time.perf_counter() < measure_to:
        await gate.acquire()
        pending.append(asyncio.create_task(one(number)))
        number += 1
        await asyncio.sleep(max(0.0, started + number / task.rate_per_s - time.perf_counter()))
    await asyncio.gather(*pending)
    return sent


def delivery_figures(result: StreamResult, watchers: Watchers, sent: list[Sent]) -> None:
    """Match measured transfers with their events: payer's and payee's streams each expect one."""
    for item in (s for s in sent if s.measured):
        result.transfers += 1
        arrivals = watchers.arrivals.get(item.transaction_id, [])[:2]
        result.missing += 2 - len(arrivals)
        for arrived in arrivals:
            result.deliveries += 1
            result.from_send_ms.append((arrived - item.sent_at) * 1000.0)
            result.after_ok_ms.append(max(0.0, arrived - item.ok_at) * 1000.0)
            result.before_ok += arrived < item.ok_at


async def report_and_wait(control: Control, message: str, gate: Any) -> None:
    control.reports.put((message, os.getpid()))
    if not await asyncio.to_thread(gate.wait, control.timeout_s):
        raise TimeoutError(f"no word from the benchmark parent after '{message}'")


async def _streams(task: StreamTask) -> StreamResult:
    result = StreamResult(window_s=task.duration_s)
    accounts = await prepare_accounts(task)
    channels = await connect(task.target, task.channels)
    stubs = [wallet_pb2_grpc.WalletServiceStub(ch) for ch in channels]
    watchers = Watchers()
    errors: Counter[str] = Counter()
    try:
        t0 = time.perf_counter()
        result.idle_opened, result.active_opened = await open_streams(
            watchers, stubs, task, accounts
        )
        result.open_s = time.perf_counter() - t0
        await report_and_wait(task.control, "open", task.control.proceed)
        sent = await send_transfers(stubs, task, accounts[1], errors)
        await asyncio.sleep(task.drain_s)
        delivery_figures(result, watchers, sent)
        await report_and_wait(task.control, "done", task.control.release)
    finally:
        await watchers.close()
        await close(channels)
        # Thousands of ended streams: their completions take longer than close()'s pause
        # to arrive, and must arrive before asyncio.run closes the loop.
        await asyncio.sleep(min(5.0, 0.0002 * len(watchers.tasks)))
    result.idle_messages = watchers.idle_messages
    errors.update(watchers.errors)
    if result.missing:
        errors[f"event not delivered within {task.drain_s:.0f}s of the window's end"] += (
            result.missing
        )
    result.errors = dict(errors)
    return result
