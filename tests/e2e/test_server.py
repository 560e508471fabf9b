"""Server behaviour around the edges: health, database outages, certificate reload."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from wallet.v1 import auth_pb2, auth_pb2_grpc

from tests.e2e.conftest import channel, make_settings
from tests.e2e.errors import rich_error
from wallet_server.security import DevPkiPaths, issue_certificate
from wallet_server.storage import create_engine
from wallet_server.transport import ServerPorts, create_server


def _missing_database(database_url: str) -> str:
    return database_url.replace("/wallet_test_", "/wallet_missing_", 1)


async def test_health_is_serving_while_the_database_answers(
    database_url: str, pki: DevPkiPaths
) -> None:
    engine = create_engine(database_url)
    server, ports = create_server(make_settings(database_url, pki), engine)
    await server.start()
    try:
        async with channel(ports.public, pki) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            overall = await stub.Check(health_pb2.HealthCheckRequest(service=""))
            wallet = await stub.Check(
                health_pb2.HealthCheckRequest(service="wallet.v1.WalletService")
            )
        assert overall.status == health_pb2.HealthCheckResponse.SERVING
        assert wallet.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(1.0)
        await engine.dispose()


async def test_without_a_database_health_says_not_serving_and_calls_are_unavailable(
    database_url: str, pki: DevPkiPaths
) -> None:
    url = _missing_database(database_url)
    engine = create_engine(url)
    server, ports = create_server(make_settings(url, pki), engine)
    await server.start()
    try:
        async with channel(ports.public, pki) as ch:
            status = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
            with pytest.raises(aio.AioRpcError) as caught:
                await auth_pb2_grpc.AuthServiceStub(ch).Register(
                    auth_pb2.RegisterRequest(
                        username="alice", password="long enough pw", display_name="A"
                    )
                )
        assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
        err = rich_error(caught.value)
        assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
        # Nothing from the driver reaches the client.
        assert "wallet_missing" not in err.message
        assert "psycopg" not in err.message.lower()
    finally:
        await server.stop(1.0)
        await engine.dispose()


def _served_certificate(port: int, ca: Path) -> x509.Certificate:
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


@asynccontextmanager
async def serving_files_of_its_own(
    database_url: str, pki: DevPkiPaths, tmp_path: Path
) -> AsyncIterator[tuple[Path, Path, ServerPorts, x509.Certificate]]:
    """A server on copies of the dev server certificate and key; yields the two paths, the
    ports and the certificate served at first."""
    cert, key = tmp_path / "server.pem", tmp_path / "server-key.pem"
    shutil.copy(pki.server_cert, cert)
    shutil.copy(pki.server_key, key)
    engine = create_engine(database_url)
    settings = make_settings(database_url, pki, tls_cert_file=cert, tls_key_file=key)
    server, ports = create_server(settings, engine)
    await server.start()
    try:
        first = await asyncio.to_thread(_served_certificate, ports.public, pki.ca_cert)
        yield cert, key, ports, first
        # And gRPC clients keep working, with whichever certificate is served now.
        async with channel(ports.public, pki) as ch:
            await auth_pb2_grpc.AuthServiceStub(ch).Register(
                auth_pb2.RegisterRequest(
                    username=f"u{uuid.uuid4().hex[:8]}", password="long enough pw"
                )
            )
    finally:
        await server.stop(1.0)
        await engine.dispose()


async def test_replaced_server_certificate_is_served_without_restart(
    database_url: str, pki: DevPkiPaths, tmp_path: Path
) -> None:
    async with serving_files_of_its_own(database_url, pki, tmp_path) as (cert, key, ports, before):
        issue_certificate(
            ca_cert_path=pki.ca_cert,
            ca_key_path=pki.ca_key,
            out_cert=cert,
            out_key=key,
            dns_names=["localhost"],
            ip_addresses=["127.0.0.1"],
            server=True,
        )
        after = before
        for _ in range(30):  # the files are looked at most once a second
            await asyncio.sleep(0.2)
            after = await asyncio.to_thread(_served_certificate, ports.public, pki.ca_cert)
            if after.serial_number != before.serial_number:
                break
        assert after.serial_number != before.serial_number


async def test_a_replaced_key_that_is_not_the_certificates_is_not_served(
    database_url: str, pki: DevPkiPaths, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving_files_of_its_own(database_url, pki, tmp_path) as (_, key, ports, before):
        shutil.copy(pki.admin_key, key)  # the wrong key: every handshake would fail with it
        for _ in range(8):  # past the once-a-second look at the files
            await asyncio.sleep(0.2)
            served = await asyncio.to_thread(_served_certificate, ports.public, pki.ca_cert)
            assert served.serial_number == before.serial_number
        assert any("keeping the old ones" in r.getMessage() for r in caplog.records)


async def test_a_call_abandoned_by_its_deadline_is_audited_as_deadline_exceeded(
    clean_db: AsyncEngine, database_url: str, pki: DevPkiPaths
) -> None:
    # Slow password hashing (over a second here) keeps Register busy long past the client's
    # deadline. The deadline leaves the call time to reach the handler on a busy machine: one
    # that passes before that is dropped by gRPC itself, and no interceptor sees the call.
    settings = make_settings(
        database_url, pki, password_time_cost=16, password_memory_kib=128 * 1024
    )
    server, ports = create_server(settings, clean_db)
    await server.start()
    try:
        async with channel(ports.public, pki) as ch:
            with pytest.raises(aio.AioRpcError) as caught:
                await auth_pb2_grpc.AuthServiceStub(ch).Register(
                    auth_pb2.RegisterRequest(username="slowpoke", password="long enough pw"),
                    timeout=0.3,
                )
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The row comes once the hashing ends, which on a busy machine takes seconds.
        codes: list[str] = []
        for _ in range(300):
            async with clean_db.connect() as conn:
                codes = list((await conn.execute(text("SELECT code FROM audit_log"))).scalars())
            if codes:
                break
            await asyncio.sleep(0.1)
        assert codes == ["DEADLINE_EXCEEDED"]
    finally:
        await server.stop(1.0)
