"""The gRPC server: one process, two TLS listeners (public and mutual-TLS), all services."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from wallet.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    partner_pb2,
    partner_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)

from wallet_server.config import Settings
from wallet_server.security import (
    AccessTokenCodec,
    PasswordHasher,
    SecretBox,
    key_fits_certificate,
)
from wallet_server.services import (
    FOLD_BATCH,
    Authenticator,
    AuthPolicy,
    BatchSlots,
    Clock,
    EventHub,
    ExpireOrders,
    MovementGroups,
    RevocationList,
    UnitOfWork,
    expire_orders,
    fold_balance_deltas,
    purge_idempotency_records,
    raise_if_cancelling,
    utc_now,
)
from wallet_server.transport._interceptors import build_interceptor
from wallet_server.transport.servicers import (
    AdminServicer,
    AuthServicer,
    PartnerServicer,
    Servicers,
    WalletServicer,
)

_log = logging.getLogger(__name__)

SERVICE_NAMES = (
    auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name,
    wallet_pb2.DESCRIPTOR.services_by_name["WalletService"].full_name,
    partner_pb2.DESCRIPTOR.services_by_name["PartnerService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)


@dataclass(frozen=True, slots=True)
class ServerPorts:
    public: int
    mtls: int


class _CertificateReloader:
    """Serves the current server certificate; picks up replaced files without a restart."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self._cert, self._key, self._client_ca = cert, key, client_ca
        self._stamp = self._mtimes()
        self._checked = time.monotonic()

    def _mtimes(self) -> tuple[float, ...]:
        paths = [self._cert, self._key] + ([self._client_ca] if self._client_ca else [])
        try:
            return tuple(p.stat().st_mtime for p in paths)
        except FileNotFoundError:
            return ()

    def configuration(
        self, key: bytes | None = None, cert: bytes | None = None
    ) -> grpc.ServerCertificateConfiguration:
        """The files as gRPC takes them; ``key`` and ``cert`` when already read."""
        return grpc.ssl_server_certificate_configuration(
            [(key or self._key.read_bytes(), cert or self._cert.read_bytes())],
            root_certificates=self._client_ca.read_bytes() if self._client_ca else None,
        )

    def __call__(self) -> grpc.ServerCertificateConfiguration:
        # gRPC takes None for "no change" although the stubs say otherwise.
        return self._changed()  # type: ignore[return-value]

    def _changed(self) -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC on each new handshake: look at the files at most once a second.
        now = time.monotonic()
        if now - self._checked < 1.0:
            return None
        self._checked = now
        stamp = self._mtimes()
        if not stamp or stamp == self._stamp:
            return None
        self._stamp = stamp  # each version is looked at once, good or bad
        try:
            # Read once: what is checked is what is served, even if the files change between.
            key, cert = self._key.read_bytes(), self._cert.read_bytes()
            fits = key_fits_certificate(key, cert)
            config = self.configuration(key, cert)
        except (OSError, ValueError, TypeError):
            fits = False
        if not fits:
            # Half-replaced, or a key and certificate that do not belong together: every
            # handshake would fail with it.
            _log.warning(
                "server certificate files changed but are not a readable certificate with "
                "its key; keeping the old ones"
            )
            return None
        _log.info("server certificate reloaded")
        return config


def _credentials(settings: Settings, *, mutual: bool) -> grpc.ServerCredentials:
    reloader = _CertificateReloader(
        settings.tls_cert_file,
        settings.tls_key_file,
        settings.client_ca_file if mutual else None,
    )
    return grpc.dynamic_ssl_server_credentials(
        reloader.configuration(), reloader, require_client_authentication=mutual
    )


class WalletServer:
    """A running (or ready to start) wallet server and what it owns."""

    def __init__(
        self,
        server: aio.Server,
        engine: AsyncEngine,
        health_servicer: health.aio.HealthServicer,
        *,
        idempotency_retention: timedelta,
        clock: Clock,
        hub: EventHub,
        movements: MovementGroups,
    ) -> None:
        self.grpc_server = server
        self._engine = engine
        self._health = health_servicer
        self._retention = idempotency_retention
        self._clock = clock
        self.hub = hub
        self.movements = movements
        self._background: list[asyncio.Task[None]] = []
        self._logged_out_of_range: frozenset[UUID] = frozenset()

    async def start(self) -> None:
        await self.hub.start()
        self.movements.start()
        await self.grpc_server.start()
        await self._check_database()
        self._background = [
            asyncio.create_task(self._monitor_database()),
            # Every server runs these; each is safe to run on several servers at once.
            asyncio.create_task(_every(600, "idempotency purge", self._purge_idempotency_records)),
            asyncio.create_task(_every(15, "order expiry", self._expire_orders)),
            asyncio.create_task(_every(0.2, "folding balance changes", self._fold_balance_deltas)),
        ]

    async def stop(self, grace: float | None = 5.0) -> None:
        """Refuse new calls, let in-flight calls finish within ``grace`` seconds, then close."""
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._set_serving(False)
        await self.grpc_server.stop(grace)
        await self.movements.stop()
        await self.hub.stop()

    async def wait_for_termination(self) -> None:
        await self.grpc_server.wait_for_termination()

    async def _set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, status)

    async def _check_database(self) -> None:
        try:
            async with asyncio.timeout(2.0), self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            serving = True
        except Exception as exc:  # any failure means "not serving"; the reason is logged
            raise_if_cancelling(exc)
            _log.warning("database health check failed", exc_info=True)
            serving = False
        await self._set_serving(serving)

    async def _monitor_database(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            await self._check_database()

    def _uow(self) -> UnitOfWork:
        return UnitOfWork(self._engine, clock=self._clock)

    async def _purge_idempotency_records(self) -> None:
        removed = await purge_idempotency_records(self._uow(), self._retention)
        if removed:
            _log.info("purged %d idempotency records", removed)

    async def _fold_balance_deltas(self) -> None:
        # System accounts' balances are their rows plus appended changes; keep that tail short.
        while True:
            fold = await fold_balance_deltas(self._uow())
            newly = fold.out_of_range - self._logged_out_of_range
            if newly:  # once per account and process: the fold meets them every 0.2 s
                _log.error(
                    "system account balances beyond the int64 range (their changes stay "
                    "unfolded; VerifyLedger reports them): %s",
                    ", ".join(sorted(map(str, newly))),
                )
                self._logged_out_of_range |= newly
            # Stop when the queue is short, or when all it held was kept: a pass folds
            # something or the next would find the same changes.
            if fold.taken < FOLD_BATCH or not fold.folded:
                return

    async def _expire_orders(self) -> None:
        # Reads already treat overdue orders as expired; this tells their merchants.
        while await expire_orders(ExpireOrders(), self._uow()):
            pass


async def _every(seconds: float, what: str, step: Callable[[], Awaitable[None]]) -> None:
    """Run ``step`` now and then every ``seconds``; a failure is logged and tried next time."""
    while True:
        try:
            await step()
        except Exception as exc:
            raise_if_cancelling(exc)
            _log.warning("%s failed; will retry", what, exc_info=True)
        await asyncio.sleep(seconds)


def build_auth_policy(settings: Settings, clock: Clock = utc_now) -> AuthPolicy:
    return AuthPolicy(
        passwords=PasswordHasher(
            time_cost=settings.password_time_cost,
            memory_cost_kib=settings.password_memory_kib,
        ),
        tokens=AccessTokenCodec(
            settings.token_keys,
            settings.token_active_key_id,
            timedelta(seconds=settings.access_token_ttl_seconds),
            clock=clock,
        ),
        session_lifetime=timedelta(seconds=settings.refresh_token_ttl_seconds),
        max_failed_logins=settings.login_max_failures,
        lockout=timedelta(seconds=settings.login_lockout_seconds),
    )


# The largest valid request is a batch of 1000 items with the longest ids and memos any
# item may have: about 0.96 MB (tests/unit/test_request_size.py). A message is held whole
# before anything can refuse it, so the limit is what one call can make the server hold:
# at 8 MiB, 120 concurrent oversized calls took a process to 1.8 GB.
MAX_REQUEST_BYTES = 2 * 1024 * 1024


def create_server(
    settings: Settings,
    engine: AsyncEngine,
    *,
    clock: Clock = utc_now,
) -> tuple[WalletServer, ServerPorts]:
    """Build the server with both listeners bound (port 0 picks free ports); not started."""
    policy = build_auth_policy(settings, clock)
    authenticator = Authenticator(
        engine,
        policy.tokens,
        RevocationList(settings.revoked_serials_file),
        cache_seconds=settings.principal_cache_seconds,
        clock=clock,
    )
    server = aio.server(
        interceptors=[build_interceptor(engine, authenticator)],
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
        ],
    )
    hub = EventHub(
        engine, settings.database_url, streams_per_caller=settings.max_streams_per_caller
    )

    def new_uow() -> UnitOfWork:
        return UnitOfWork(engine, clock=clock)

    movements = MovementGroups(new_uow)
    batches = BatchSlots(new_uow)
    deps = Servicers(
        engine=engine,
        policy=policy,
        clock=clock,
        authenticator=authenticator,
        secrets=SecretBox(settings.secret_keys, settings.secret_active_key_id),
        hub=hub,
        movements=movements,
        batches=batches,
    )
    # The generated stubs mark every RPC abstract; RPCs a servicer does not define answer
    # UNIMPLEMENTED (with ErrorInfo) through the base class at run time.
    auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(deps), server)  # type: ignore[abstract]
    wallet_pb2_grpc.add_WalletServiceServicer_to_server(WalletServicer(deps), server)  # type: ignore[abstract]
    partner_pb2_grpc.add_PartnerServiceServicer_to_server(PartnerServicer(deps), server)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(deps), server)  # type: ignore[abstract]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    public = server.add_secure_port(
        f"{settings.host}:{settings.port}", _credentials(settings, mutual=False)
    )
    mtls = server.add_secure_port(
        f"{settings.effective_mtls_host}:{settings.mtls_port}", _credentials(settings, mutual=True)
    )
    if public == 0 or mtls == 0:
        raise OSError(
            f"could not bind {settings.host}:{settings.port} or "
            f"{settings.effective_mtls_host}:{settings.mtls_port}"
        )
    wallet_server = WalletServer(
        server,
        engine,
        health_servicer,
        idempotency_retention=timedelta(hours=settings.idempotency_retention_hours),
        clock=clock,
        hub=hub,
        movements=movements,
    )
    return wallet_server, ServerPorts(public, mtls)
