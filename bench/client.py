"""Load-generator side: everything here runs in spawned child processes.

Each task builds its own event loop (``asyncio.run``) and its own gRPC channels, so no gRPC
object ever exists in the parent or crosses a process boundary; only plain data goes back.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from wallet.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    ledger_pb2,
    partner_pb2,
    partner_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)

PASSWORD = "bench horse battery staple"  # noqa: S105 - throwaway users in a throwaway database


@dataclass(frozen=True)
class Target:
    """Where the server listens and where its dev certificates are."""

    public_port: int
    mtls_port: int
    certs: Path

    def channel(self, *, identity: str | None = None) -> aio.Channel:
        root = (self.certs / "ca.pem").read_bytes()
        if identity is None:
            creds = grpc.ssl_channel_credentials(root_certificates=root)
            return aio.secure_channel(f"localhost:{self.public_port}", creds)
        creds = grpc.ssl_channel_credentials(
            root_certificates=root,
            private_key=(self.certs / f"{identity}-key.pem").read_bytes(),
            certificate_chain=(self.certs / f"{identity}.pem").read_bytes(),
        )
        return aio.secure_channel(f"localhost:{self.mtls_port}", creds)


@dataclass(frozen=True)
class Holder:
    """A benchmark user: bearer token and the one USD account it owns."""

    token: str
    account_id: str


@dataclass(frozen=True)
class SetupTask:
    target: Target
    prefix: str
    users: int
    deposit_minor: int


@dataclass(frozen=True)
class LoadTask:
    target: Target
    scenario: str  # "health" or "transfer"
    in_flight: int
    channels: int
    start_at: float  # wall clock (time.time) when warm-up begins, shared by all processes
    warmup_s: float
    duration_s: float
    holders: tuple[Holder, ...] = ()
    destinations: tuple[str, ...] = ()


@dataclass
class LoadResult:
    calls: int = 0  # completed successfully inside the measured window
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    window_s: float = 0.0


def usd(minor: int) -> ledger_pb2.Money:
    return ledger_pb2.Money(currency_code="USD", amount_minor=minor)


def run_setup(task: SetupTask) -> list[Holder]:
    return asyncio.run(_setup(task))


async def _setup(task: SetupTask) -> list[Holder]:
    public = task.target.channel()
    partner_ch = task.target.channel(identity="partner-demo")
    auth = auth_pb2_grpc.AuthServiceStub(public)
    wallet = wallet_pb2_grpc.WalletServiceStub(public)
    partner = partner_pb2_grpc.PartnerServiceStub(partner_ch)
    gate = asyncio.Semaphore(4)  # argon2 on the server: a few sign-ups at a time

    async def one(i: int) -> Holder:
        async with gate:
            name = f"{task.prefix}-{i}"
            await auth.Register(
                auth_pb2.RegisterRequest(username=name, password=PASSWORD, display_name=name)
            )
            login = await auth.Login(
                auth_pb2.LoginRequest(username=name, password=PASSWORD, device_name="bench")
            )
            token = login.tokens.access_token
            opened = await wallet.OpenAccount(
                wallet_pb2.OpenAccountRequest(request_id=str(uuid.uuid4()), currency_code="USD"),
                metadata=(("authorization", f"Bearer {token}"),),
            )
            account_id = opened.account.account_id
            await partner.Deposit(
                partner_pb2.DepositRequest(
                    request_id=str(uuid.uuid4()),
                    account_id=account_id,
                    amount=usd(task.deposit_minor),
                    external_reference="bench",
                )
            )
            return Holder(token=token, account_id=account_id)

    try:
        return list(await asyncio.gather(*(one(i) for i in range(task.users))))
    finally:
        await public.close(grace=None)
        await partner_ch.close(grace=None)


def run_load(task: LoadTask) -> LoadResult:
    return asyncio.run(_load(task))


async def _load(task: LoadTask) -> LoadResult:
    channels = [task.target.channel() for _ in range(task.channels)]
    try:
        for ch in channels:
            await asyncio.wait_for(ch.channel_ready(), timeout=30)
        measure_from = task.start_at + task.warmup_s
        measure_to = measure_from + task.duration_s
        await asyncio.sleep(max(0.0, task.start_at - time.time()))
        result = LoadResult(window_s=task.duration_s)
        errors: Counter[str] = Counter()
        health = [health_pb2_grpc.HealthStub(ch) for ch in channels]
        wallets = [wallet_pb2_grpc.WalletServiceStub(ch) for ch in channels]
        rng = random.Random()  # noqa: S311 - picks destinations, not secrets
        holders = itertools.cycle(task.holders) if task.holders else None

        async def worker(slot: int) -> None:
            hstub = health[slot % len(health)]
            wstub = wallets[slot % len(wallets)]
            # Each slot sends from its own holder when there are enough, so in-flight calls
            # from one process rarely debit the same account at once.
            holder = next(holders) if holders is not None else None
            while True:
                begun = time.time()
                if begun >= measure_to:
                    return
                t0 = time.perf_counter()
                try:
                    if holder is None:
                        await hstub.Check(health_pb2.HealthCheckRequest())
                    else:
                        dest = rng.choice(task.destinations)
                        while dest == holder.account_id:
                            dest = rng.choice(task.destinations)
                        await wstub.Transfer(
                            wallet_pb2.TransferRequest(
                                request_id=str(uuid.uuid4()),
                                from_account_id=holder.account_id,
                                to_account_id=dest,
                                amount=usd(1),
                            ),
                            metadata=(("authorization", f"Bearer {holder.token}"),),
                        )
                except aio.AioRpcError as exc:
                    if begun >= measure_from:
                        errors[f"{exc.code().name}: {exc.details()}"[:160]] += 1
                    continue
                elapsed_ms = (time.perf_counter() - t0) * 1000.0
                if begun >= measure_from and time.time() <= measure_to:
                    result.calls += 1
                    result.latencies_ms.append(elapsed_ms)

        await asyncio.gather(*(worker(i) for i in range(task.in_flight)))
        result.errors = dict(errors)
        return result
    finally:
        for ch in channels:
            await ch.close(grace=None)


@dataclass(frozen=True)
class LedgerCheck:
    accounts: int
    transactions: int
    violations: list[str]


def run_verify(target: Target) -> LedgerCheck:
    """VerifyLedger with the operator certificate."""
    return asyncio.run(_verify(target))


async def _verify(target: Target) -> LedgerCheck:
    ch = target.channel(identity="admin")
    try:
        admin = admin_pb2_grpc.AdminServiceStub(ch)
        response = await admin.VerifyLedger(admin_pb2.VerifyLedgerRequest(), timeout=120)
        return LedgerCheck(
            accounts=response.accounts_checked,
            transactions=response.transactions_checked,
            violations=[str(v).replace("\n", " ") for v in response.violations],
        )
    finally:
        await ch.close(grace=None)
