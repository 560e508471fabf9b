"""Load-generator side: everything here runs in spawned child processes.

Each task builds its own event loop (``asyncio.run``) and its own gRPC channels, so no gRPC
object ever exists in the parent or crosses a process boundary; only plain data goes back.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass
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

from bench.loop import Done, LoadResult, Operation, Window, closed_loop

__all__ = [
    "Holder",
    "LedgerCheck",
    "LoadResult",
    "LoadTask",
    "SetupTask",
    "Target",
    "run_load",
    "run_setup",
    "run_verify",
    "usd",
]

PASSWORD = "bench horse battery staple"  # noqa: S105 - throwaway users in a throwaway database
DEMO_PARTNER = "partner-demo"  # certificate stem of the partner the dev server registers
CHANNEL_OPTIONS = (
    ("grpc.use_local_subchannel_pool", 1),  # one connection per channel, not one per process
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),  # 1000-result batch responses
)


@dataclass(frozen=True)
class Target:
    """Where the server listens and where its dev certificates are."""

    public_port: int
    mtls_port: int
    certs: Path

    def channel(self, *, identity: str | None = None) -> aio.Channel:
        """A TLS channel (mutual TLS as ``identity``, e.g. "partner-demo", when given) with a
        connection of its own: channels do not share connections, so N channels are N TCP
        connections for the kernel to spread over the server's worker processes."""
        root = (self.certs / "ca.pem").read_bytes()
        if identity is None:
            creds = grpc.ssl_channel_credentials(root_certificates=root)
            return aio.secure_channel(f"localhost:{self.public_port}", creds, CHANNEL_OPTIONS)
        creds = grpc.ssl_channel_credentials(
            root_certificates=root,
            private_key=(self.certs / f"{identity}-key.pem").read_bytes(),
            certificate_chain=(self.certs / f"{identity}.pem").read_bytes(),
        )
        return aio.secure_channel(f"localhost:{self.mtls_port}", creds, CHANNEL_OPTIONS)


@dataclass(frozen=True)
class Holder:
    """A benchmark user: bearer token and the one USD account it owns."""

    token: str
    account_id: str
    refresh_token: str = ""  # for RefreshSession when a long run outlives the access token


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


def usd(minor: int) -> ledger_pb2.Money:
    return ledger_pb2.Money(currency_code="USD", amount_minor=minor)


def run_setup(task: SetupTask) -> list[Holder]:
    return asyncio.run(_setup(task))


async def _setup(task: SetupTask) -> list[Holder]:
    public = task.target.channel()
    partner_ch = task.target.channel(identity=DEMO_PARTNER)
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
            opened = await wallet.OpenAccount(
                wallet_pb2.OpenAccountRequest(request_id=str(uuid.uuid4()), currency_code="USD"),
                metadata=(("authorization", f"Bearer {login.tokens.access_token}"),),
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
            return Holder(login.tokens.access_token, account_id, login.tokens.refresh_token)

    try:
        return list(await asyncio.gather(*(one(i) for i in range(task.users))))
    finally:
        await close([public, partner_ch])


def run_load(task: LoadTask) -> LoadResult:
    return asyncio.run(_load(task))


async def connect(target: Target, count: int, *, identity: str | None = None) -> list[aio.Channel]:
    """``count`` channels, each on its own connection, ready to use."""
    channels = [target.channel(identity=identity) for _ in range(count)]
    try:
        for ch in channels:
            await asyncio.wait_for(ch.channel_ready(), timeout=30)
    except BaseException:
        await close(channels)
        raise
    return channels


async def close(channels: list[aio.Channel]) -> None:
    """Close the channels (ending their calls), then give gRPC a moment to deliver the
    ended calls' completions while the event loop still runs (else it reports them to a
    closed loop)."""
    for ch in channels:
        await ch.close(grace=None)
    await asyncio.sleep(0.1)


def bearer(holder: Holder) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {holder.token}"),)


def health_operation(channels: list[aio.Channel]) -> Operation:
    stubs = [health_pb2_grpc.HealthStub(ch) for ch in channels]

    async def call(slot: int) -> Done:
        await stubs[slot % len(stubs)].Check(health_pb2.HealthCheckRequest())
        return Done()

    return call


def transfer_operation(
    channels: list[aio.Channel], holders: tuple[Holder, ...], destinations: tuple[str, ...]
) -> Operation:
    """A 1-minor-unit Transfer to a random other account. Each slot sends from its own holder
    when there are enough, so in-flight calls from one process rarely debit one account."""
    stubs = [wallet_pb2_grpc.WalletServiceStub(ch) for ch in channels]
    rng = random.Random()  # noqa: S311 - picks destinations, not secrets

    async def call(slot: int) -> Done:
        holder = holders[slot % len(holders)]
        dest = rng.choice(destinations)
        while dest == holder.account_id:
            dest = rng.choice(destinations)
        await stubs[slot % len(stubs)].Transfer(
            wallet_pb2.TransferRequest(
                request_id=str(uuid.uuid4()),
                from_account_id=holder.account_id,
                to_account_id=dest,
                amount=usd(1),
            ),
            metadata=bearer(holder),
        )
        return Done(kind="transfer")

    return call


async def _load(task: LoadTask) -> LoadResult:
    channels = await connect(task.target, task.channels)
    try:
        if task.scenario == "transfer":
            operation = transfer_operation(channels, task.holders, task.destinations)
        else:
            operation = health_operation(channels)
        window = Window(task.start_at, task.warmup_s, task.duration_s)
        return await closed_loop(operation, task.in_flight, window)
    finally:
        await close(channels)


def run_refresh(target: Target, holders: list[Holder]) -> list[Holder]:
    """The same users with new tokens (AuthService.RefreshSession)."""
    return asyncio.run(_refresh(target, holders))


async def _refresh(target: Target, holders: list[Holder]) -> list[Holder]:
    (ch,) = await connect(target, 1)
    auth = auth_pb2_grpc.AuthServiceStub(ch)
    gate = asyncio.Semaphore(16)

    async def one(holder: Holder) -> Holder:
        async with gate:
            response = await auth.RefreshSession(
                auth_pb2.RefreshSessionRequest(refresh_token=holder.refresh_token)
            )
        tokens = response.tokens
        return Holder(tokens.access_token, holder.account_id, tokens.refresh_token)

    try:
        return list(await asyncio.gather(*(one(h) for h in holders)))
    finally:
        await close([ch])


def run_settlement_account(target: Target) -> str:
    """The demo partner's USD settlement account (it exists once the set-up deposited)."""
    return asyncio.run(_settlement_account(target))


async def _settlement_account(target: Target) -> str:
    (ch,) = await connect(target, 1, identity=DEMO_PARTNER)
    try:
        listed = await partner_pb2_grpc.PartnerServiceStub(ch).ListSettlementAccounts(
            partner_pb2.ListSettlementAccountsRequest()
        )
        (usd_account,) = (a.account_id for a in listed.accounts if a.currency_code == "USD")
        return usd_account
    finally:
        await close([ch])


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
