"""Who is calling: bearer access tokens and client certificates become principals."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from wallet_server.domain import (
    OperatorPrincipal,
    PartnerPrincipal,
    PermissionDenied,
    Reason,
    Unauthenticated,
    UserPrincipal,
)
from wallet_server.security import (
    OPERATOR_SPIFFE_PREFIX,
    PARTNER_SPIFFE_PREFIX,
    AccessTokenCodec,
    PeerCertificate,
    load_revoked_serials,
)
from wallet_server.services._unit_of_work import UnitOfWork

CertPrincipal = PartnerPrincipal | OperatorPrincipal

_log = logging.getLogger(__name__)


class RevocationList:
    """Revoked certificate serials from a file, re-read when the file changes.

    Python gRPC has no CRL support, so the chain can be valid while the certificate is not.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._mtime: float | None = None
        self._serials: frozenset[int] = frozenset()
        self._checked_at = 0.0
        self._missing = False

    def is_revoked(self, serial: int) -> bool:
        now = time.monotonic()
        if self._path is not None and now - self._checked_at > 1.0:
            self._checked_at = now
            try:
                mtime = self._path.stat().st_mtime
            except FileNotFoundError:
                # Keep what was revoked: a deleted or misplaced list must not un-revoke anyone.
                if not self._missing:
                    _log.warning(
                        "revocation list %s is missing; keeping the last one read", self._path
                    )
                self._missing = True
                return serial in self._serials
            self._missing = False
            if mtime != self._mtime:
                self._serials = load_revoked_serials(self._path)
                self._mtime = mtime
        return serial in self._serials


class Authenticator:
    def __init__(
        self,
        engine: AsyncEngine,
        tokens: AccessTokenCodec,
        revocations: RevocationList,
        *,
        cache_seconds: float = 5.0,
    ) -> None:
        self._engine = engine
        self._tokens = tokens
        self._revocations = revocations
        self._cache_seconds = cache_seconds
        # A short cache: a partner's registration is read once per few seconds, not per call.
        self._cache: dict[str, tuple[float, CertPrincipal | None]] = {}

    def user_from_bearer(self, token: str) -> UserPrincipal:
        claims = self._tokens.verify(token)
        return UserPrincipal(user_id=claims.user_id, session_id=claims.session_id)

    async def principal_from_certificate(self, cert: PeerCertificate) -> CertPrincipal:
        if self._revocations.is_revoked(cert.serial_number):
            raise Unauthenticated(
                "the client certificate has been revoked", reason=Reason.CERTIFICATE_REVOKED
            )
        spiffe_id = cert.spiffe_id
        if spiffe_id is None:
            raise PermissionDenied(
                "the client certificate carries no SPIFFE identity",
                reason=Reason.UNKNOWN_PRINCIPAL,
            )
        now = time.monotonic()
        cached = self._cache.get(spiffe_id)
        if cached is not None and now - cached[0] < self._cache_seconds:
            principal = cached[1]
        else:
            principal = await self._lookup(spiffe_id)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[spiffe_id] = (now, principal)
        if principal is None:
            raise PermissionDenied(
                f"{spiffe_id} is not a registered partner or operator",
                reason=Reason.UNKNOWN_PRINCIPAL,
            )
        return principal

    def forget(self, spiffe_id: str) -> None:
        self._cache.pop(spiffe_id, None)

    async def _lookup(self, spiffe_id: str) -> CertPrincipal | None:
        async with UnitOfWork(self._engine) as uow:
            if spiffe_id.startswith(PARTNER_SPIFFE_PREFIX):
                return await uow.principals.partner_by_spiffe_id(spiffe_id)
            if spiffe_id.startswith(OPERATOR_SPIFFE_PREFIX):
                return await uow.principals.operator_by_spiffe_id(spiffe_id)
            return None
