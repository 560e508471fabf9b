"""Sign-up and sign-in: registration, login, refresh-token rotation, logout, profile."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from wallet_server.domain import (
    AlreadyExists,
    NotFound,
    RateLimited,
    Reason,
    Unauthenticated,
    User,
    normalize_username,
    validate_registration,
)
from wallet_server.security import (
    AccessTokenCodec,
    PasswordHasher,
    hash_refresh_token,
    new_refresh_token,
)
from wallet_server.services._call import note_principal, note_resources
from wallet_server.services._commands import GetMe, LogIn, LogOut, RefreshSession, RegisterUser
from wallet_server.services._results import SessionTokens
from wallet_server.services._retry import retry_on_conflict
from wallet_server.services._unit_of_work import UnitOfWork


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """The credentials machinery and the rules around it."""

    passwords: PasswordHasher
    tokens: AccessTokenCodec
    session_lifetime: timedelta
    max_failed_logins: int = 5
    lockout: timedelta = timedelta(minutes=15)


_INVALID_CREDENTIALS = "wrong username or password"


@retry_on_conflict
async def register(cmd: RegisterUser, uow: UnitOfWork, policy: AuthPolicy) -> User:
    username = validate_registration(cmd.username, cmd.password, cmd.display_name)
    # argon2 is deliberately slow: keep it off the event loop.
    password_hash = await asyncio.to_thread(policy.passwords.hash, cmd.password)
    async with uow:
        user = await uow.users.add(
            user_id=uow.new_id(),
            username=username,
            password_hash=password_hash,
            display_name=cmd.display_name.strip(),
        )
        if user is None:
            raise AlreadyExists("that username is taken", reason=Reason.USERNAME_TAKEN)
        note_resources(user.user_id)
        note_principal(f"user:{user.user_id}")
        await uow.commit()
        return user


@retry_on_conflict
async def log_in(cmd: LogIn, uow: UnitOfWork, policy: AuthPolicy) -> SessionTokens:
    """Password sign-in. An unknown user and a wrong password get the same answer."""
    async with uow:
        now = uow.now()
        creds = await uow.users.credentials_for_update(normalize_username(cmd.username))
        if creds is not None and creds.locked_until is not None and creds.locked_until > now:
            raise RateLimited(
                "too many failed sign-ins; try again later", reason=Reason.RATE_LIMITED
            )
        stored_hash = None if creds is None else creds.password_hash
        ok = await asyncio.to_thread(policy.passwords.verify, stored_hash, cmd.password)
        if creds is None or not ok:
            if creds is not None:
                # A lockout that has run out starts a fresh count.
                lockout_over = creds.locked_until is not None and creds.locked_until <= now
                failures = (0 if lockout_over else creds.failed_logins) + 1
                locked_until = (
                    now + policy.lockout if failures >= policy.max_failed_logins else None
                )
                await uow.users.record_login_failure(creds.user.user_id, locked_until)
                note_resources(creds.user.user_id)
                note_principal(f"user:{creds.user.user_id}")
                await uow.commit(code="UNAUTHENTICATED")
            raise Unauthenticated(_INVALID_CREDENTIALS, reason=Reason.INVALID_CREDENTIALS)
        user = creds.user
        rehash = None
        if policy.passwords.needs_rehash(creds.password_hash):
            rehash = await asyncio.to_thread(policy.passwords.hash, cmd.password)
        await uow.users.record_login_success(user.user_id, rehash)
        session_id = uow.new_id()
        expires_at = now + policy.session_lifetime
        await uow.users.add_session(
            session_id=session_id,
            user_id=user.user_id,
            device_name=cmd.device_name.strip()[:100] or "unnamed device",
            expires_at=expires_at,
        )
        tokens = await _issue_tokens(uow, policy, user.user_id, session_id, expires_at)
        note_resources(user.user_id, session_id)
        note_principal(f"user:{user.user_id}")
        await uow.commit()
        return tokens


@retry_on_conflict
async def refresh_session(
    cmd: RefreshSession, uow: UnitOfWork, policy: AuthPolicy
) -> SessionTokens:
    """Rotate: the presented token dies. Presenting a dead token ends the whole session,
    because only a thief or a replay would hold a token that was already exchanged."""
    token_hash = hash_refresh_token(cmd.refresh_token)
    async with uow:
        now = uow.now()
        found = await uow.users.refresh_token_for_update(token_hash)
        if found is None:
            raise Unauthenticated("unknown refresh token", reason=Reason.TOKEN_INVALID)
        session = found.session
        note_resources(session.user_id, session.session_id)
        note_principal(f"user:{session.user_id}")
        if session.revoked_at is not None:
            raise Unauthenticated("the session has ended", reason=Reason.TOKEN_INVALID)
        if session.expires_at <= now:
            raise Unauthenticated("the session has expired", reason=Reason.TOKEN_EXPIRED)
        if found.used_at is not None:
            await uow.users.revoke_session(session.session_id, "refresh token reused")
            await uow.commit(code="UNAUTHENTICATED")
            raise Unauthenticated(
                "refresh token already used; the session has been ended",
                reason=Reason.REFRESH_TOKEN_REUSED,
            )
        await uow.users.mark_refresh_token_used(token_hash)
        tokens = await _issue_tokens(
            uow, policy, session.user_id, session.session_id, session.expires_at
        )
        await uow.commit()
        return tokens


@retry_on_conflict
async def log_out(cmd: LogOut, uow: UnitOfWork) -> None:
    async with uow:
        await uow.users.revoke_session(cmd.caller.session_id, "logout")
        note_resources(cmd.caller.session_id)
        await uow.commit()


@retry_on_conflict
async def get_me(cmd: GetMe, uow: UnitOfWork) -> User:
    async with uow:
        user = await uow.users.get(cmd.caller.user_id)
        if user is None:
            raise NotFound("user not found")
        await uow.commit()
        return user


async def _issue_tokens(
    uow: UnitOfWork,
    policy: AuthPolicy,
    user_id: UUID,
    session_id: UUID,
    session_expires_at: datetime,
) -> SessionTokens:
    refresh_token = new_refresh_token()
    await uow.users.add_refresh_token(
        token_hash=hash_refresh_token(refresh_token), session_id=session_id
    )
    access = policy.tokens.issue(user_id, session_id)
    return SessionTokens(
        session_id=session_id,
        access_token=access.token,
        access_token_expires_at=access.expires_at,
        refresh_token=refresh_token,
        refresh_token_expires_at=session_expires_at,
    )
