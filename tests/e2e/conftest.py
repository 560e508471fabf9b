"""End-to-end fixtures: the real server over TLS and mutual TLS on port 0, in-process."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc import aio
from sqlalchemy.ext.asyncio import AsyncEngine
from wallet.v1 import (
    admin_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    ledger_pb2,
    partner_pb2,
    partner_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)

from wallet_server.config import Settings
from wallet_server.domain import ALL_PARTNER_SCOPES
from wallet_server.security import DevPkiPaths
from wallet_server.services import Clock, UnitOfWork, register_operator, register_partner
from wallet_server.transport import ServerPorts, create_server

Metadata = tuple[tuple[str, str], ...]


def make_settings(database_url: str, pki: DevPkiPaths, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "tls_cert_file": pki.server_cert,
        "tls_key_file": pki.server_key,
        "client_ca_file": pki.ca_cert,
        "token_keys": {"k1": b"t" * 32},
        "token_active_key_id": "k1",
        "secret_keys": {"s1": b"s" * 32},
        "secret_active_key_id": "s1",
        "host": "127.0.0.1",
        "port": 0,
        "mtls_port": 0,
        "password_time_cost": 1,
        "password_memory_kib": 1024,
        "login_max_failures": 3,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def channel(
    port: int, pki: DevPkiPaths, cert: Path | None = None, key: Path | None = None
) -> aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_cert.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )
    return aio.secure_channel(f"localhost:{port}", credentials)


@dataclass
class Wallet:
    """Clients for one running server: a mobile user's view, a partner's and an operator's."""

    ports: ServerPorts
    pki: DevPkiPaths
    engine: AsyncEngine
    channels: list[aio.Channel] = field(default_factory=list)

    def _open(self, port: int, cert: Path | None = None, key: Path | None = None) -> aio.Channel:
        ch = channel(port, self.pki, cert, key)
        self.channels.append(ch)
        return ch

    @property
    def auth(self) -> auth_pb2_grpc.AuthServiceAsyncStub:
        return auth_pb2_grpc.AuthServiceStub(self._open(self.ports.public))

    @property
    def wallet(self) -> wallet_pb2_grpc.WalletServiceAsyncStub:
        return wallet_pb2_grpc.WalletServiceStub(self._open(self.ports.public))

    @property
    def partner(self) -> partner_pb2_grpc.PartnerServiceAsyncStub:
        return partner_pb2_grpc.PartnerServiceStub(
            self._open(self.ports.mtls, self.pki.partner_cert, self.pki.partner_key)
        )

    @property
    def admin(self) -> admin_pb2_grpc.AdminServiceAsyncStub:
        return admin_pb2_grpc.AdminServiceStub(
            self._open(self.ports.mtls, self.pki.admin_cert, self.pki.admin_key)
        )

    async def sign_up(self, username: str, password: str = "correct horse battery") -> Metadata:
        """Register and log in; returns call metadata carrying the bearer token."""
        auth = self.auth
        await auth.Register(
            auth_pb2.RegisterRequest(username=username, password=password, display_name=username)
        )
        login = await auth.Login(
            auth_pb2.LoginRequest(username=username, password=password, device_name="test")
        )
        return (("authorization", f"Bearer {login.tokens.access_token}"),)

    async def open_account(self, metadata: Metadata, currency: str = "USD") -> str:
        response = await self.wallet.OpenAccount(
            wallet_pb2.OpenAccountRequest(request_id=str(uuid.uuid4()), currency_code=currency),
            metadata=metadata,
        )
        return response.account.account_id

    async def deposit(self, account_id: str, amount_minor: int, currency: str = "USD") -> None:
        await self.partner.Deposit(
            partner_pb2.DepositRequest(
                request_id=str(uuid.uuid4()),
                account_id=account_id,
                amount=ledger_pb2.Money(currency_code=currency, amount_minor=amount_minor),
                external_reference="e2e",
            )
        )

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close(grace=None)


async def seed(engine: AsyncEngine) -> None:
    await register_operator(UnitOfWork(engine), "admin")
    await register_partner(UnitOfWork(engine), "demo", ALL_PARTNER_SCOPES)


@pytest.fixture
async def settings(database_url: str, pki: DevPkiPaths) -> Settings:
    return make_settings(database_url, pki)


@asynccontextmanager
async def running(
    engine: AsyncEngine, settings: Settings, pki: DevPkiPaths, clock: Clock | None = None
) -> AsyncIterator[Wallet]:
    """A seeded server on ``engine`` with these settings (and clock), and a client of it."""
    await seed(engine)
    if clock is None:
        server, ports = create_server(settings, engine)
    else:
        server, ports = create_server(settings, engine, clock=clock)
    await server.start()
    client = Wallet(ports=ports, pki=pki, engine=engine)
    try:
        yield client
    finally:
        await client.close()
        await server.stop(grace=1.0)


@pytest.fixture
async def wallet(
    clean_db: AsyncEngine, settings: Settings, pki: DevPkiPaths
) -> AsyncIterator[Wallet]:
    async with running(clean_db, settings, pki) as client:
        yield client
