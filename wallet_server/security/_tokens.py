"""Access tokens (short-lived HS256 JWTs with a key id); refresh tokens (random, stored hashed)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import jwt

from wallet_server.domain import Reason, Unauthenticated

_ALGORITHM = "HS256"
_TOKEN_TYPE = "access"  # noqa: S105 (a claim value, not a secret)
_MIN_KEY_BYTES = 32
# Far above any token we issue (~300 chars); refuses oversized input before parsing it.
_MAX_TOKEN_CHARS = 4096
_REQUIRED_CLAIMS = ["sub", "sid", "iat", "exp", "iss", "typ"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: UUID
    session_id: UUID
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class IssuedAccessToken:
    token: str = field(repr=False)
    expires_at: datetime


_VERIFIED_CACHE_SIZE = 10_000  # a few MB at most; emptied when full


class AccessTokenCodec:
    """Issues and verifies access tokens; any of ``keys`` verifies, ``active_key_id`` signs."""

    __slots__ = (
        "_active_key_id",
        "_clock",
        "_issuer",
        "_jwt",
        "_key_id_by_header",
        "_keys",
        "_ttl",
        "_verified",
    )

    def __init__(
        self,
        keys: Mapping[str, bytes],
        active_key_id: str,
        ttl: timedelta,
        *,
        issuer: str = "wallet-server",
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        _validate_keys(keys)
        if active_key_id not in keys:
            raise ValueError(
                f"active access token key id {active_key_id!r} is not among the configured keys"
            )
        # Expiry is carried in whole seconds, so a shorter lifetime would mean "already expired".
        if ttl < timedelta(seconds=1):
            raise ValueError("access token ttl must be at least one second")
        if not issuer:
            raise ValueError("access token issuer must not be empty")
        self._keys = dict(keys)
        self._active_key_id = active_key_id
        self._ttl = ttl
        self._issuer = issuer
        self._clock = clock
        # Signatures already checked, by the exact token text: a client sends the same
        # token on every call for its lifetime, and checking it again costs more than the
        # rest of authentication. Expiry is still checked on every use.
        self._verified: dict[str, AccessClaims] = {}
        # Expiry and issue time are checked against our clock, not PyJWT's wall clock.
        self._jwt = jwt.PyJWT(
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "verify_iss": True,
                "require": _REQUIRED_CLAIMS,
                "enforce_minimum_key_length": True,
            }
        )
        # Every token we sign with a given key has the same header segment, so the key id of
        # our own tokens is a dict lookup instead of a second parse of the token.
        self._key_id_by_header = {self._encoded_header(key_id): key_id for key_id in self._keys}

    @property
    def ttl(self) -> timedelta:
        return self._ttl

    def issue(self, user_id: UUID, session_id: UUID) -> IssuedAccessToken:
        now = self._now()
        issued_at = int(now.timestamp())
        expires_at = int((now + self._ttl).timestamp())
        payload = {
            "sub": str(user_id),
            "sid": str(session_id),
            "iat": issued_at,
            "exp": expires_at,
            "iss": self._issuer,
            "typ": _TOKEN_TYPE,
        }
        token = self._jwt.encode(
            payload,
            self._keys[self._active_key_id],
            algorithm=_ALGORITHM,
            headers={"kid": self._active_key_id},
        )
        return IssuedAccessToken(token=token, expires_at=datetime.fromtimestamp(expires_at, UTC))

    def verify(self, token: str) -> AccessClaims:
        """The token's claims; ``Unauthenticated`` (TOKEN_EXPIRED or TOKEN_INVALID) otherwise."""
        claims = self._verified.get(token)
        if claims is None:
            claims = self._verify_signature(token)
            if len(self._verified) >= _VERIFIED_CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = claims
        if self._now() >= claims.expires_at:
            raise Unauthenticated("access token expired", reason=Reason.TOKEN_EXPIRED)
        return claims

    def _verify_signature(self, token: str) -> AccessClaims:
        if len(token) > _MAX_TOKEN_CHARS:
            raise _invalid()
        key_id = self._key_id_of(token)
        key = None if key_id is None else self._keys.get(key_id)
        if key is None:
            raise _invalid()
        try:
            payload = self._jwt.decode(token, key, algorithms=[_ALGORITHM], issuer=self._issuer)
        except jwt.InvalidTokenError as exc:
            raise _invalid() from exc
        return _claims_from(payload)

    def _key_id_of(self, token: str) -> str | None:
        key_id = self._key_id_by_header.get(token.partition(".")[0])
        if key_id is not None:
            return key_id
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            return None
        key_id = header.get("kid")
        return key_id if isinstance(key_id, str) else None

    def _encoded_header(self, key_id: str) -> str:
        sample = self._jwt.encode(
            {}, self._keys[key_id], algorithm=_ALGORITHM, headers={"kid": key_id}
        )
        return sample.partition(".")[0]

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the access token clock must return timezone-aware datetimes")
        return now

    def __repr__(self) -> str:
        return (
            f"AccessTokenCodec(key_ids={sorted(self._keys)!r}, "
            f"active_key_id={self._active_key_id!r}, ttl={self._ttl!r}, issuer={self._issuer!r})"
        )


def _validate_keys(keys: Mapping[str, bytes]) -> None:
    if not keys:
        raise ValueError("at least one access token key is required")
    for key_id, key in keys.items():
        if not isinstance(key_id, str) or not key_id:
            raise ValueError("access token key ids must be non-empty strings")
        if not isinstance(key, bytes):
            raise ValueError(f"access token key {key_id!r} must be bytes")
        if len(key) < _MIN_KEY_BYTES:
            raise ValueError(f"access token key {key_id!r} is shorter than {_MIN_KEY_BYTES} bytes")


def _claims_from(payload: dict[str, Any]) -> AccessClaims:
    if payload.get("typ") != _TOKEN_TYPE:
        raise _invalid()
    subject, session, issued_at, expires_at = (
        payload["sub"],
        payload["sid"],
        payload["iat"],
        payload["exp"],
    )
    if not (isinstance(subject, str) and isinstance(session, str)):
        raise _invalid()
    if not (_is_int(issued_at) and _is_int(expires_at)):
        raise _invalid()
    try:
        return AccessClaims(
            user_id=UUID(subject),
            session_id=UUID(session),
            expires_at=datetime.fromtimestamp(expires_at, UTC),
        )
    except (ValueError, OverflowError, OSError) as exc:
        raise _invalid() from exc


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _invalid() -> Unauthenticated:
    return Unauthenticated("invalid access token", reason=Reason.TOKEN_INVALID)


def new_refresh_token() -> str:
    """A fresh opaque refresh token (256 random bits); store only its hash."""
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> bytes:
    """The SHA-256 digest under which a refresh token is stored and looked up."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
