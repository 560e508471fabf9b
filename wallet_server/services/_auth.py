"""Sign-up and sign-in: registration, login, refresh-token rotation, logout, profile."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from wallet_server.domain import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
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
from wallet_server.services._authentication import session_ended
from wallet_server.services._call import note_principal, note_resources
from wallet_server.services._commands import GetMe, LogIn, LogOut, RefreshSession, RegisterUser
from wallet_server.services._results import SessionTokens
from wallet_server.services._retry import retry_on_conflict
from wallet_server.services._unit_of_work import UnitOfWork
from wallet_server.storage.repositories import UserCredentials

_log = logging.getLogger(__name__)


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


# Sign-in input is bounded before any hashing: an anonymous caller must not be able to make
# argon2 chew on megabytes. The password limit is registration's; usernames are at most 32.
MAX_LOGIN_USERNAME_LENGTH = 64
MAX_LOGIN_PASSWORD_LENGTH = 256


class _KeyedLocks:
    """One :class:`asyncio.Lock` per key, kept only while someone holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            _, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


# Sign-in attempts for one name run one after another in this process: each reads the
# throttle only after the previous attempt recorded its outcome, so a burst of parallel
# guesses gets no more tries than a sequence would. Waiting holds no connection.
_attempts = _KeyedLocks()
# Far longer than a password check: the place of an attempt whose process died lapses.
_ATTEMPT_LAPSES_AFTER = timedelta(minutes=1)


def _check_login_input(cmd: LogIn) -> str:
    """The normalized username; overlong input is refused before anything is looked up."""
    violations: list[FieldViolation] = []
    if len(cmd.username) > MAX_LOGIN_USERNAME_LENGTH:
        violations.append(
            FieldViolation("username", f"at most {MAX_LOGIN_USERNAME_LENGTH} characters")
        )
    if len(cmd.password) > MAX_LOGIN_PASSWORD_LENGTH:
        violations.append(
            FieldViolation("password", f"at most {MAX_LOGIN_PASSWORD_LENGTH} characters")
        )
    if violations:
        raise InvalidArgument("invalid sign-in request", violations=tuple(violations))
    return normalize_username(cmd.username)


async def log_in(cmd: LogIn, uow: UnitOfWork, policy: AuthPolicy) -> SessionTokens:
    """Password sign-in. An unknown user and a wrong password get the same answer, cost the
    same work and count against the same per-name throttle.

    Three steps, so that no pooled connection or row lock is held while argon2 runs: read the
    credentials and the throttle (a short transaction), verify in a worker thread outside any
    transaction, record the outcome (another short transaction).
    """
    username = _check_login_input(cmd)
    async with _attempts.hold(username):
        creds, allowed = await _begin_sign_in(uow, policy, username)
        if not allowed:
            raise RateLimited(
                "too many failed sign-ins; try again later", reason=Reason.RATE_LIMITED
            )
        recorded = False  # a failure counted, or a session started (which clears the row)
        try:
            stored_hash = None if creds is None else creds.password_hash
            # argon2 is deliberately slow: keep it off the event loop (an unknown user is
            # checked against the hasher's dummy hash, so it takes as long as a wrong one).
            ok = await asyncio.to_thread(policy.passwords.verify, stored_hash, cmd.password)
            if creds is None or not ok:
                await _record_failed_sign_in(uow, policy, username)
                recorded = True
                raise Unauthenticated(_INVALID_CREDENTIALS, reason=Reason.INVALID_CREDENTIALS)
            rehash = None
            if policy.passwords.needs_rehash(creds.password_hash):
                rehash = await asyncio.to_thread(policy.passwords.hash, cmd.password)
            tokens = await _start_session(cmd, uow, policy, creds, rehash)
            recorded = True
            return tokens
        finally:
            if not recorded:
                # Cancelled, or the outcome could not be written: give the place back, or
                # cancelled attempts would lock the name with no failure counted.
                await _give_back_place(uow, username)


@retry_on_conflict
async def _begin_sign_in(
    uow: UnitOfWork, policy: AuthPolicy, username: str
) -> tuple[UserCredentials | None, bool]:
    """The name's credentials, and whether this attempt may check its password: it takes a
    place among the name's attempts in flight, shared by every server process."""
    async with uow:
        creds = await uow.users.credentials(username)
        allowed = await uow.users.begin_login_attempt(
            username,
            now=uow.now(),
            max_failures=policy.max_failed_logins,
            lapse_after=_ATTEMPT_LAPSES_AFTER,
        )
        # Not uow.commit(): that would write this call's audit row before its outcome.
        await uow.connection.commit()
        return creds, allowed


async def _give_back_place(uow: UnitOfWork, username: str) -> None:
    """Give back an attempt's place, in a task of its own that a second cancellation does
    not stop. Best effort: a place not given back lapses (``_ATTEMPT_LAPSES_AFTER``)."""

    async def give_back() -> None:
        async with UnitOfWork(uow.engine, clock=uow.clock) as fresh:
            await fresh.users.end_login_attempt(username)
            await fresh.connection.commit()

    task = asyncio.ensure_future(give_back())
    task.add_done_callback(_log_failed_give_back)
    with contextlib.suppress(Exception):
        await asyncio.shield(task)  # a cancellation still leaves through here


def _log_failed_give_back(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _log.warning("could not give back a sign-in attempt's place: %s", task.exception())


@retry_on_conflict
async def _record_failed_sign_in(uow: UnitOfWork, policy: AuthPolicy, username: str) -> None:
    async with uow:
        await uow.users.record_login_failure(
            username,
            now=uow.now(),
            max_failures=policy.max_failed_logins,
            lockout=policy.lockout,
        )
        # The caller stays anonymous and no user id is named: the audit log must not tell
        # an unknown name from a real one either.
        await uow.commit(code="UNAUTHENTICATED")


@retry_on_conflict
async def _start_session(
    cmd: LogIn,
    uow: UnitOfWork,
    policy: AuthPolicy,
    creds: UserCredentials,
    rehash: str | None,
) -> SessionTokens:
    user = creds.user
    async with uow:
        now = uow.now()
        await uow.users.clear_login_throttle(user.username)
        if rehash is not None:
            await uow.users.replace_password_hash(user.user_id, old=creds.password_hash, new=rehash)
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
            session_ended(session.session_id)  # its access tokens stop working here at once
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
    session_ended(cmd.caller.session_id)  # its access tokens stop working here at once


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
