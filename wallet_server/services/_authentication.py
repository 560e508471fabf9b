"""Who is calling: bearer access tokens and client certificates become principals."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncEngine

from wallet_server.domain import (
    OperatorPrincipal,
    PartnerPrincipal,
    PermissionDenied,
    Reason,
    Unauthenticated,
    Unavailable,
    UserPrincipal,
)
from wallet_server.security import (
    OPERATOR_SPIFFE_PREFIX,
    PARTNER_SPIFFE_PREFIX,
    AccessTokenCodec,
    PeerCertificate,
    load_revoked_serials,
)
from wallet_server.services._unit_of_work import Clock, UnitOfWork, utc_now
from wallet_server.storage import is_unavailable
from wallet_server.storage.repositories import UserRepository

CertPrincipal = PartnerPrincipal | OperatorPrincipal
T = TypeVar("T")

_log = logging.getLogger(__name__)

# Bounds the per-process caches; past it the oldest entries go first.
_MAX_CACHED = 10_000

# Every Authenticator of this process, so that a session ended here (logout, refresh-token
# reuse) stops its access tokens at once instead of after the cache TTL.
_authenticators: weakref.WeakSet[Authenticator] = weakref.WeakSet()


def session_ended(session_id: UUID) -> None:
    """Tell this process's authenticators that a session was revoked (call after commit)."""
    for authenticator in list(_authenticators):
        authenticator.forget_session(session_id)


async def _from_database(lookup: Awaitable[T]) -> T:
    """An unreachable database is ``UNAVAILABLE`` for the caller, not an internal error."""
    try:
        return await lookup
    except Exception as exc:
        if is_unavailable(exc):
            raise Unavailable("the database is unavailable; retry later") from exc
        raise


@dataclass(frozen=True, slots=True)
class _SessionState:
    """What the bearer check needs of a session; ``ended`` is final (revoked or unknown)."""

    checked_at: float  # time.monotonic()
    user_id: UUID | None
    expires_at: datetime | None
    ended: bool


def _evict_oldest(cache: dict[UUID, _SessionState]) -> None:
    while len(cache) > _MAX_CACHED:
        del cache[next(iter(cache))]


class RevocationList:
    """Revoked certificate serials from a file, re-read when the file changes.

    Python gRPC has no CRL support, so the chain can be valid while the certificate is not.
    The file is read once when the list is made (a malformed file is a ``ValueError`` then,
    so the server does not start); a later version that cannot be read or parsed is logged
    and the last good list stays in force: a broken edit must not un-revoke anyone.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._version = _file_version(path)
        self._serials: frozenset[int] = load_revoked_serials(path)
        self._checked_at = time.monotonic()
        self._missing = False

    def is_revoked(self, serial: int) -> bool:
        now = time.monotonic()
        if self._path is not None and now - self._checked_at > 1.0:
            self._checked_at = now
            self._reload_if_changed(self._path)
        return serial in self._serials

    def _reload_if_changed(self, path: Path) -> None:
        version = _file_version(path)
        if version is None:
            # Keep what was revoked: a deleted or misplaced list must not un-revoke anyone.
            if not self._missing:
                _log.warning(
                    "revocation list %s is missing or unreadable; keeping the last one read",
                    path,
                )
            self._missing = True
            return
        self._missing = False
        if version == self._version:
            return
        self._version = version  # tried once per version, good or bad
        try:
            self._serials = load_revoked_serials(path)
        except (OSError, ValueError) as exc:
            _log.warning(
                "revocation list %s could not be read (%s); keeping the last one read", path, exc
            )


def _file_version(path: Path | None) -> tuple[int, int, int, int] | None:
    """What tells one version of the file from another. A rewrite can keep the mtime and
    size (``touch -r``, ``os.utime``); the inode's change time moves with any write."""
    if path is None:
        return None
    try:
        stat = path.stat()
    except OSError:  # gone, or a directory on its path gone or closed: treated as missing
        return None
    return stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size, stat.st_ino


class Authenticator:
    """Turns credentials into principals, with short per-process caches in front of the
    database.

    Bearer tokens: the signature and expiry are checked locally, then the token's session must
    still be active (not revoked, not expired). A session's state is read at most once per
    ``cache_seconds`` per session (concurrent calls share one read). A session ended in this
    process (:func:`session_ended`: logout, refresh-token reuse) is refused at once; one ended
    by another server process is refused within ``cache_seconds``. An ended session never
    comes back, so that answer is kept until evicted.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        tokens: AccessTokenCodec,
        revocations: RevocationList,
        *,
        cache_seconds: float = 5.0,
        clock: Clock = utc_now,
    ) -> None:
        self._engine = engine
        self._tokens = tokens
        self._revocations = revocations
        self._cache_seconds = cache_seconds
        self._clock = clock
        # A short cache: a partner's registration is read once per few seconds, not per call.
        self._cache: dict[str, tuple[float, CertPrincipal | None]] = {}
        self._sessions: dict[UUID, _SessionState] = {}
        self._session_reads: dict[UUID, asyncio.Future[_SessionState]] = {}
        _authenticators.add(self)

    async def user_from_bearer(self, token: str) -> UserPrincipal:
        claims = self._tokens.verify(token)
        state = await self._session_state(claims.session_id)
        if state.ended or state.user_id != claims.user_id:
            raise Unauthenticated("the session has ended", reason=Reason.TOKEN_INVALID)
        if state.expires_at is not None and state.expires_at <= self._clock():
            raise Unauthenticated("the session has expired", reason=Reason.TOKEN_EXPIRED)
        return UserPrincipal(user_id=claims.user_id, session_id=claims.session_id)

    def forget_session(self, session_id: UUID) -> None:
        """The session has ended: refuse its access tokens from now on."""
        self._sessions.pop(session_id, None)
        self._sessions[session_id] = _SessionState(time.monotonic(), None, None, ended=True)
        _evict_oldest(self._sessions)

    async def _session_state(self, session_id: UUID) -> _SessionState:
        cached = self._sessions.get(session_id)
        if cached is not None and (
            cached.ended or time.monotonic() - cached.checked_at < self._cache_seconds
        ):
            return cached
        read = self._session_reads.get(session_id)
        if read is None:
            read = asyncio.ensure_future(self._read_session(session_id))
            self._session_reads[session_id] = read
            read.add_done_callback(lambda done: self._read_finished(session_id, done))
        # Shielded: one caller giving up must not cancel the read the others wait for.
        return await asyncio.shield(read)

    def _read_finished(self, session_id: UUID, read: asyncio.Future[_SessionState]) -> None:
        if self._session_reads.get(session_id) is read:
            del self._session_reads[session_id]
        if not read.cancelled():
            read.exception()  # retrieved: every waiter may have gone away

    async def _read_session(self, session_id: UUID) -> _SessionState:
        async def read() -> _SessionState:
            # One indexed read, outside any explicit transaction.
            async with self._engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                row = await UserRepository(conn).session(session_id)
            if row is None or row.revoked_at is not None:
                return _SessionState(time.monotonic(), None, None, ended=True)
            return _SessionState(time.monotonic(), row.user_id, row.expires_at, ended=False)

        state = await _from_database(read())
        current = self._sessions.get(session_id)
        if current is not None and current.ended:
            return current  # ended while this read was in flight: that is final
        self._sessions.pop(session_id, None)
        self._sessions[session_id] = state
        _evict_oldest(self._sessions)
        return state

    async def principal_from_certificate(self, cert: PeerCertificate) -> CertPrincipal:
        if self._revocations.is_revoked(cert.serial_number):
            raise Unauthenticated(
                "the client certificate has been revoked", reason=Reason.CERTIFICATE_REVOKED
            )
        spiffe_id = cert.spiffe_id
        if spiffe_id is None:
            raise PermissionDenied(
                "the client certificate carries no SPIFFE identity "
                "(exactly one URI name, spiffe://...)",
                reason=Reason.UNKNOWN_PRINCIPAL,
            )
        now = time.monotonic()
        cached = self._cache.get(spiffe_id)
        if cached is not None and now - cached[0] < self._cache_seconds:
            principal = cached[1]
        else:
            principal = await _from_database(self._lookup(spiffe_id))
            if len(self._cache) > _MAX_CACHED:
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
