"""Sign-up and sign-in on the real database: validation, unique names, refresh-token rotation
with reuse detection, logout, session expiry, lockout bookkeeping (for unknown names too),
password rehashing, what sign-in holds while it hashes, and bearer-token session checks."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.conftest import Ledger
from wallet_server import services
from wallet_server.domain import (
    AlreadyExists,
    InvalidArgument,
    RateLimited,
    Reason,
    Unauthenticated,
    Unavailable,
    UserPrincipal,
)
from wallet_server.security import DevPkiPaths, PasswordHasher, peer_certificate_from_pem
from wallet_server.storage import create_engine
from wallet_server.storage.repositories import LoginThrottle, UserCredentials

Uow = Callable[[], services.UnitOfWork]
PASSWORD = "correct horse battery"


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def sign_up(uow: Uow, policy: services.AuthPolicy, username: str = "alice") -> None:
    await services.register(
        services.RegisterUser(username, PASSWORD, username.title()), uow(), policy
    )


async def log_in(
    uow: Uow, policy: services.AuthPolicy, username: str = "alice", password: str = PASSWORD
) -> services.SessionTokens:
    return await services.log_in(services.LogIn(username, password, "phone"), uow(), policy)


async def refresh(
    uow: services.UnitOfWork, policy: services.AuthPolicy, token: str
) -> services.SessionTokens:
    return await services.refresh_session(services.RefreshSession(token), uow, policy)


async def refused(uow: services.UnitOfWork, policy: services.AuthPolicy, token: str) -> str:
    """The reason refreshing with ``token`` is refused (fails the test if it is not)."""
    with pytest.raises(Unauthenticated) as caught:
        await refresh(uow, policy, token)
    assert caught.value.status_name == "UNAUTHENTICATED"
    return caught.value.reason


async def credentials(uow: Uow, username: str = "alice") -> UserCredentials:
    async with uow() as u:
        found = await u.users.credentials(username)
    assert found is not None
    return found


async def throttle(uow: Uow, username: str = "alice") -> LoginThrottle | None:
    async with uow() as u:
        return await u.users.login_throttle(username)


class CountingHasher(PasswordHasher):
    """Cheap argon2 that counts verifications and can hold one open until released."""

    __slots__ = ("entered", "gate", "verified")

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost_kib=1024, parallelism=1)
        self.verified = 0
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def verify(self, stored_hash: str | None, password: str) -> bool:
        self.verified += 1
        self.entered.set()
        assert self.gate.wait(10), "the test never released the verification"
        return super().verify(stored_hash, password)


def counting(policy: services.AuthPolicy) -> tuple[services.AuthPolicy, CountingHasher]:
    hasher = CountingHasher()
    return replace(policy, passwords=hasher), hasher


# --- registration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "password", "bad_fields"),
    [
        ("al", PASSWORD, {"username"}),
        ("_alice", PASSWORD, {"username"}),
        ("al ice", PASSWORD, {"username"}),
        ("a" * 33, PASSWORD, {"username"}),
        ("", PASSWORD, {"username"}),
        ("alice", "short", {"password"}),
        ("alice", "", {"password"}),
        ("alice", "x" * 257, {"password"}),
        ("!", "1234567", {"username", "password"}),
    ],
)
async def test_register_refuses_bad_input_with_every_field_violation(
    uow: Uow, policy: services.AuthPolicy, username: str, password: str, bad_fields: set[str]
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await services.register(services.RegisterUser(username, password, "A"), uow(), policy)

    error = caught.value
    assert (error.status_name, error.reason) == ("INVALID_ARGUMENT", "INVALID_ARGUMENT")
    assert {v.field for v in error.violations} == bad_fields
    assert all(v.description for v in error.violations)
    async with uow() as u:
        assert await u.users.user_id_by_username(username.lower()) is None


async def test_register_keeps_the_boundaries(uow: Uow, policy: services.AuthPolicy) -> None:
    short = await services.register(services.RegisterUser("abc", "x" * 8, ""), uow(), policy)
    long = await services.register(
        services.RegisterUser("a" * 32, "x" * 256, "B" * 100), uow(), policy
    )
    assert (short.username, long.username) == ("abc", "a" * 32)


@pytest.mark.parametrize("again", ["alice", "ALICE", "Alice", "  alice  "])
async def test_username_is_taken_whatever_its_case(
    uow: Uow, policy: services.AuthPolicy, again: str
) -> None:
    first = await services.register(services.RegisterUser("alice", PASSWORD, "A"), uow(), policy)

    with pytest.raises(AlreadyExists) as caught:
        await services.register(
            services.RegisterUser(again, "another password", "Impostor"), uow(), policy
        )

    assert (caught.value.status_name, caught.value.reason) == ("ALREADY_EXISTS", "USERNAME_TAKEN")
    # The first account is untouched: its password still works, the impostor's does not.
    assert (await log_in(uow, policy)).session_id
    with pytest.raises(Unauthenticated):
        await log_in(uow, policy, password="another password")
    assert (await credentials(uow)).user == first


async def test_concurrent_registrations_of_one_name_admit_exactly_one(
    uow: Uow, policy: services.AuthPolicy
) -> None:
    outcomes = await asyncio.gather(
        *(
            services.register(services.RegisterUser(name, PASSWORD, "A"), uow(), policy)
            for name in ("alice", "Alice", "ALICE", "aLiCe")
        ),
        return_exceptions=True,
    )
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
    assert all(
        isinstance(o, AlreadyExists) and o.reason == Reason.USERNAME_TAKEN
        for o in outcomes
        if isinstance(o, BaseException)
    )


# --- refresh tokens ------------------------------------------------------------------------


async def test_refresh_rotates_and_reusing_an_old_token_ends_the_whole_session(
    uow: Uow, policy: services.AuthPolicy
) -> None:
    await sign_up(uow, policy)
    first = await log_in(uow, policy)
    other_device = await log_in(uow, policy)

    second = await refresh(uow(), policy, first.refresh_token)
    assert second.session_id == first.session_id
    assert second.refresh_token != first.refresh_token
    claims = policy.tokens.verify(second.access_token)
    assert claims.session_id == first.session_id
    # Rotation does not extend the session.
    assert second.refresh_token_expires_at == first.refresh_token_expires_at

    third = await refresh(uow(), policy, second.refresh_token)  # the new one works

    assert await refused(uow(), policy, second.refresh_token) == Reason.REFRESH_TOKEN_REUSED
    # The reuse ended the session: its newest token is dead too, and so is the first.
    assert await refused(uow(), policy, third.refresh_token) == Reason.TOKEN_INVALID
    assert await refused(uow(), policy, first.refresh_token) == Reason.TOKEN_INVALID
    # Other sessions of the same user are not affected.
    assert (await refresh(uow(), policy, other_device.refresh_token)).session_id == (
        other_device.session_id
    )


async def test_unknown_refresh_token_is_token_invalid(
    uow: Uow, policy: services.AuthPolicy
) -> None:
    await sign_up(uow, policy)
    tokens = await log_in(uow, policy)

    assert await refused(uow(), policy, tokens.refresh_token + "x") == Reason.TOKEN_INVALID
    assert await refused(uow(), policy, tokens.access_token) == Reason.TOKEN_INVALID
    assert (await refresh(uow(), policy, tokens.refresh_token)).refresh_token


@pytest.mark.parametrize("attempt", range(5))
async def test_two_concurrent_refreshes_of_one_token_exactly_one_succeeds(
    uow: Uow, policy: services.AuthPolicy, attempt: int
) -> None:
    await sign_up(uow, policy)
    tokens = await log_in(uow, policy)

    outcomes = await asyncio.gather(
        refresh(uow(), policy, tokens.refresh_token),
        refresh(uow(), policy, tokens.refresh_token),
        return_exceptions=True,
    )

    won = [o for o in outcomes if isinstance(o, services.SessionTokens)]
    lost = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(won) == 1
    assert len(lost) == 1
    assert isinstance(lost[0], Unauthenticated)
    # The loser presented a token that had just been used: that is reuse, and by design
    # (DESIGN.md: "presenting a dead one revokes the whole session") it ends the session,
    # the winner's fresh token included.
    assert lost[0].reason == Reason.REFRESH_TOKEN_REUSED
    assert await refused(uow(), policy, won[0].refresh_token) == Reason.TOKEN_INVALID


async def test_logout_revokes_the_sessions_refresh_tokens_and_only_them(
    uow: Uow, policy: services.AuthPolicy
) -> None:
    await sign_up(uow, policy)
    phone = await log_in(uow, policy)
    laptop = await log_in(uow, policy)
    rotated = await refresh(uow(), policy, phone.refresh_token)
    user_id = policy.tokens.verify(phone.access_token).user_id

    await services.log_out(
        services.LogOut(caller=UserPrincipal(user_id=user_id, session_id=phone.session_id)), uow()
    )

    assert await refused(uow(), policy, rotated.refresh_token) == Reason.TOKEN_INVALID
    assert await refused(uow(), policy, phone.refresh_token) == Reason.TOKEN_INVALID
    assert (await refresh(uow(), policy, laptop.refresh_token)).session_id == laptop.session_id
    # Logging out twice is harmless.
    await services.log_out(
        services.LogOut(caller=UserPrincipal(user_id=user_id, session_id=phone.session_id)), uow()
    )


async def test_an_expired_session_refuses_refresh(
    clean_db: AsyncEngine, policy: services.AuthPolicy
) -> None:
    clock = FakeClock(datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC))

    def uow() -> services.UnitOfWork:
        return services.UnitOfWork(clean_db, clock=clock)

    await sign_up(uow, policy)
    tokens = await log_in(uow, policy)
    assert tokens.refresh_token_expires_at == clock.now + policy.session_lifetime

    clock.now = tokens.refresh_token_expires_at - timedelta(seconds=1)
    last = await refresh(uow(), policy, tokens.refresh_token)
    assert last.refresh_token_expires_at == tokens.refresh_token_expires_at

    clock.now = tokens.refresh_token_expires_at
    assert await refused(uow(), policy, last.refresh_token) == Reason.TOKEN_EXPIRED
    clock.now += timedelta(days=365)
    assert await refused(uow(), policy, last.refresh_token) == Reason.TOKEN_EXPIRED


# --- sign-in bookkeeping ---------------------------------------------------------------------


async def test_wrong_password_and_unknown_user_get_the_same_error(
    uow: Uow, policy: services.AuthPolicy
) -> None:
    await sign_up(uow, policy)

    with pytest.raises(Unauthenticated) as wrong:
        await log_in(uow, policy, password="not the password")
    with pytest.raises(Unauthenticated) as unknown:
        await log_in(uow, policy, username="nobody")

    assert (wrong.value.reason, wrong.value.message) == (
        unknown.value.reason,
        unknown.value.message,
    )
    assert wrong.value.reason == Reason.INVALID_CREDENTIALS


async def test_failures_count_until_a_success_and_then_start_over(
    uow: Uow, policy: services.AuthPolicy
) -> None:
    assert policy.max_failed_logins == 3
    await sign_up(uow, policy)
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await log_in(uow, policy, password="not the password")
    # Committed although the call failed; kept under the normalized name.
    assert await throttle(uow) == LoginThrottle(failures=2, locked_until=None)

    await log_in(uow, policy, username="  ALICE ")
    assert await throttle(uow) is None

    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await log_in(uow, policy, password="not the password")
    assert (await log_in(uow, policy)).access_token  # two more failures: not locked


async def test_an_unknown_name_is_locked_after_as_many_failures_as_a_real_one(
    clean_db: AsyncEngine, policy: services.AuthPolicy
) -> None:
    clock = FakeClock(datetime(2027, 3, 4, 5, 6, tzinfo=UTC))

    def uow() -> services.UnitOfWork:
        return services.UnitOfWork(clean_db, clock=clock)

    await sign_up(uow, policy)
    answers: dict[str, list[tuple[str, str, str]]] = {"alice": [], "nobody": []}
    for name, answer in answers.items():
        for _ in range(policy.max_failed_logins):
            with pytest.raises(Unauthenticated) as failed:
                await log_in(uow, policy, username=name, password="not the password")
            answer.append((failed.value.status_name, failed.value.reason, failed.value.message))
        # Locked now: even the right password is refused, for the real name and the unknown.
        with pytest.raises(RateLimited) as locked:
            await log_in(uow, policy, username=name)
        answer.append((locked.value.status_name, locked.value.reason, locked.value.message))

    assert answers["alice"] == answers["nobody"]
    assert answers["nobody"][0] == (
        "UNAUTHENTICATED",
        Reason.INVALID_CREDENTIALS,
        "wrong username or password",
    )
    assert answers["nobody"][-1][:2] == ("RESOURCE_EXHAUSTED", Reason.RATE_LIMITED)
    locked_state = LoginThrottle(policy.max_failed_logins, clock.now + policy.lockout)
    assert await throttle(uow, "alice") == await throttle(uow, "nobody") == locked_state

    # When the lockout runs out, both names start a fresh count.
    clock.now += policy.lockout
    for name in answers:
        with pytest.raises(Unauthenticated):
            await log_in(uow, policy, username=name, password="not the password")
        assert await throttle(uow, name) == LoginThrottle(1, None)
    assert (await log_in(uow, policy)).access_token


async def test_a_locked_name_is_refused_without_verifying_the_password(
    uow: Uow, policy: services.AuthPolicy
) -> None:
    policy, hasher = counting(policy)
    await sign_up(uow, policy)
    for name in ("alice", "nobody"):
        for _ in range(policy.max_failed_logins):
            with pytest.raises(Unauthenticated):
                await log_in(uow, policy, username=name, password="not the password")
    assert hasher.verified == 2 * policy.max_failed_logins

    for name in ("alice", "nobody", "ALICE"):
        with pytest.raises(RateLimited):
            await log_in(uow, policy, username=name)
    assert hasher.verified == 2 * policy.max_failed_logins


@pytest.mark.parametrize("name", ["alice", "nobody"])
async def test_a_burst_of_parallel_guesses_gets_no_more_tries_than_a_sequence(
    uow: Uow, policy: services.AuthPolicy, name: str
) -> None:
    policy, hasher = counting(policy)
    await sign_up(uow, policy)

    outcomes = await asyncio.gather(
        *(log_in(uow, policy, username=name, password=f"guess {i}") for i in range(12)),
        return_exceptions=True,
    )

    assert sum(isinstance(o, Unauthenticated) for o in outcomes) == policy.max_failed_logins
    assert sum(isinstance(o, RateLimited) for o in outcomes) == 12 - policy.max_failed_logins
    assert hasher.verified == policy.max_failed_logins


async def test_an_attempt_in_another_process_counts_while_this_one_verifies(
    uow: Uow, policy: services.AuthPolicy
) -> None:
    # Processes do not share the in-process queue of attempts: only the database can tell
    # another server process that this attempt may be the name's last allowed failure.
    policy, hasher = counting(policy)
    await sign_up(uow, policy)
    for _ in range(policy.max_failed_logins - 1):
        with pytest.raises(Unauthenticated):
            await log_in(uow, policy, password="not the password")
    hasher.gate.clear()
    hasher.entered.clear()
    checking = asyncio.create_task(log_in(uow, policy, password="not the password"))
    try:
        assert await asyncio.to_thread(hasher.entered.wait, 10)
        async with uow() as u:  # what another process's attempt asks at this moment
            elsewhere = await u.users.begin_login_attempt(
                "alice",
                now=u.now(),
                max_failures=policy.max_failed_logins,
                lapse_after=timedelta(minutes=1),
            )
    finally:
        hasher.gate.set()
    with pytest.raises(Unauthenticated):
        await checking

    assert elsewhere is False
    locked = await throttle(uow)
    assert locked is not None
    assert locked.failures == policy.max_failed_logins
    assert hasher.verified == policy.max_failed_logins


async def test_cancelled_attempts_give_their_places_back(
    clean_db: AsyncEngine, uow: Uow, policy: services.AuthPolicy
) -> None:
    # A client that gives up while its password is checked (or a deadline) must not take
    # one of the name's places for good: the right password would then be refused.
    policy, hasher = counting(policy)
    await sign_up(uow, policy)
    for _ in range(policy.max_failed_logins):
        hasher.gate.clear()
        hasher.entered.clear()
        attempt = asyncio.create_task(log_in(uow, policy, password="not the password"))
        assert await asyncio.to_thread(hasher.entered.wait, 10)
        attempt.cancel()
        hasher.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await attempt

    async with clean_db.connect() as conn:
        in_flight = await conn.scalar(
            text("SELECT in_flight FROM login_throttle WHERE username = 'alice'")
        )
    assert in_flight == 0
    assert await throttle(uow) == LoginThrottle(failures=0, locked_until=None)
    assert (await log_in(uow, policy)).access_token


async def test_failures_beyond_a_lowered_limit_allow_one_attempt_that_then_locks(
    clean_db: AsyncEngine, policy: services.AuthPolicy
) -> None:
    clock = FakeClock(datetime(2027, 3, 4, 5, 6, tzinfo=UTC))
    async with services.UnitOfWork(clean_db, clock=clock) as u:
        for _ in range(4):  # counted under an earlier limit of 5
            await u.users.record_login_failure(
                "alice", now=clock.now, max_failures=5, lockout=policy.lockout
            )
        await u.connection.commit()

    async def attempt(max_failures: int) -> bool:
        async with services.UnitOfWork(clean_db, clock=clock) as u:
            taken = await u.users.begin_login_attempt(
                "alice", now=clock.now, max_failures=max_failures, lapse_after=timedelta(0)
            )
            if taken:
                await u.users.record_login_failure(
                    "alice", now=clock.now, max_failures=max_failures, lockout=policy.lockout
                )
            await u.connection.commit()
            return taken

    assert await attempt(3) is True  # not refused for ever without a lockout
    assert await attempt(3) is False  # that failure locked the name
    locked = await throttle(lambda: services.UnitOfWork(clean_db, clock=clock))
    assert locked == LoginThrottle(5, clock.now + policy.lockout)


async def test_an_attempt_that_never_came_back_gives_its_place_back_after_a_while(
    clean_db: AsyncEngine, policy: services.AuthPolicy
) -> None:
    clock = FakeClock(datetime(2027, 3, 4, 5, 6, tzinfo=UTC))
    lapse = timedelta(minutes=1)

    async def begin() -> bool:
        async with services.UnitOfWork(clean_db, clock=clock) as u:
            taken = await u.users.begin_login_attempt(
                "alice", now=clock.now, max_failures=policy.max_failed_logins, lapse_after=lapse
            )
            await u.connection.commit()
            return taken

    # Processes that died while checking: their places stay taken until they lapse.
    taken = [await begin() for _ in range(policy.max_failed_logins + 1)]
    clock.now += lapse - timedelta(seconds=1)
    still_full = await begin()
    clock.now += timedelta(seconds=1)
    lapsed = await begin()

    assert taken == [True] * policy.max_failed_logins + [False]
    assert (still_full, lapsed) == (False, True)


@pytest.mark.parametrize("password", [PASSWORD, "not the password"])
async def test_sign_in_holds_no_connection_or_row_lock_while_it_verifies(
    clean_db: AsyncEngine, uow: Uow, ledger: Ledger, policy: services.AuthPolicy, password: str
) -> None:
    policy, hasher = counting(policy)
    await sign_up(uow, policy)
    user_id = (await credentials(uow)).user.user_id
    caller = UserPrincipal(user_id=user_id, session_id=uuid.uuid4())
    with pytest.raises(Unauthenticated):  # a throttle row exists for the name
        await log_in(uow, policy, password="not the password")
    hasher.gate.clear()
    hasher.entered.clear()

    attempt = asyncio.ensure_future(log_in(uow, policy, password=password))
    try:
        assert await asyncio.to_thread(hasher.entered.wait, 10)
        assert not attempt.done()
        # While argon2 runs, the sign-in holds no pooled connection...
        assert clean_db.pool.checkedout() == 0  # type: ignore[attr-defined]
        # ...and no lock on the user's row or the name's throttle row.
        async with clean_db.connect() as conn:
            await conn.execute(text("SET LOCAL lock_timeout = '1s'"))
            await conn.execute(
                text("SELECT 1 FROM users WHERE username = 'alice' FOR UPDATE NOWAIT")
            )
            await conn.execute(
                text("SELECT 1 FROM login_throttle WHERE username = 'alice' FOR UPDATE NOWAIT")
            )
            await conn.rollback()
        # Another use case on the same user completes meanwhile.
        account_id = await ledger.account(caller)
        assert await ledger.balance(caller, account_id) == 0
        assert not attempt.done()
    finally:
        hasher.gate.set()
    if password == PASSWORD:
        assert (await attempt).access_token
        assert await throttle(uow) is None
    else:
        with pytest.raises(Unauthenticated):
            await attempt
        assert await throttle(uow) == LoginThrottle(2, None)


@pytest.mark.parametrize(
    ("username", "password", "bad_fields"),
    [
        ("alice", "x" * 257, {"password"}),
        ("alice", "x" * 1_000_000, {"password"}),
        ("a" * 65, PASSWORD, {"username"}),
        ("a" * 65, "x" * 257, {"username", "password"}),
    ],
)
async def test_overlong_sign_in_input_is_refused_before_any_hashing(
    uow: Uow, policy: services.AuthPolicy, username: str, password: str, bad_fields: set[str]
) -> None:
    policy, hasher = counting(policy)
    await sign_up(uow, policy)

    with pytest.raises(InvalidArgument) as caught:
        await log_in(uow, policy, username=username, password=password)

    assert caught.value.status_name == "INVALID_ARGUMENT"
    assert {v.field for v in caught.value.violations} == bad_fields
    assert hasher.verified == 0
    assert await throttle(uow, normalize(username)) is None


def normalize(username: str) -> str:
    return username.strip().lower()


async def test_the_longest_allowed_sign_in_input_is_verified(
    uow: Uow, policy: services.AuthPolicy
) -> None:
    policy, hasher = counting(policy)
    with pytest.raises(Unauthenticated):
        await log_in(uow, policy, username="a" * 64, password="x" * 256)
    assert hasher.verified == 1


async def test_a_failed_sign_in_is_audited_once_anonymously_and_names_no_user(
    uow: Uow, policy: services.AuthPolicy
) -> None:
    await sign_up(uow, policy)
    for name in ("alice", "nobody"):
        record = services.CallRecord(
            method="/wallet.v1.AuthService/Login", peer="test", started_at=datetime.now(UTC)
        )
        services.begin_call(record)
        with pytest.raises(Unauthenticated):
            await log_in(uow, policy, username=name, password="not the password")
        assert record.audited
        assert (record.principal, record.resource_ids) == ("anonymous", [])

    async with uow() as u:
        rows = (
            await u.connection.execute(
                text("SELECT principal, resource_ids, code FROM audit_log ORDER BY seq")
            )
        ).all()
    assert [tuple(r) for r in rows] == [("anonymous", [], "UNAUTHENTICATED")] * 2


async def test_a_rehash_never_overwrites_a_hash_changed_during_the_verification(
    uow: Uow, policy: services.AuthPolicy
) -> None:
    await sign_up(uow, policy)
    hasher = CountingHasher()
    rehashing = replace(policy, passwords=RehashingHasher(hasher))
    changed = policy.passwords.hash("a brand new password")
    hasher.gate.clear()

    attempt = asyncio.ensure_future(log_in(uow, rehashing))
    try:
        assert await asyncio.to_thread(hasher.entered.wait, 10)
        async with uow() as u:  # e.g. a password change lands while argon2 runs
            await u.connection.execute(
                text("UPDATE users SET password_hash = :h WHERE username = 'alice'"),
                {"h": changed},
            )
            await u.commit()
    finally:
        hasher.gate.set()
    assert (await attempt).access_token  # verified against the hash it had read

    assert (await credentials(uow)).password_hash == changed


class RehashingHasher(PasswordHasher):
    """Delegates to ``inner`` but asks for a rehash of every hash."""

    __slots__ = ("inner",)

    def __init__(self, inner: CountingHasher) -> None:
        super().__init__(time_cost=1, memory_cost_kib=1024, parallelism=1)
        self.inner = inner

    def verify(self, stored_hash: str | None, password: str) -> bool:
        return self.inner.verify(stored_hash, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        return True


async def test_login_rehashes_a_password_hashed_with_old_parameters(
    uow: Uow, policy: services.AuthPolicy
) -> None:
    await sign_up(uow, policy)
    old_hash = (await credentials(uow)).password_hash
    stronger = replace(policy, passwords=PasswordHasher(time_cost=2, memory_cost_kib=2048))
    assert stronger.passwords.needs_rehash(old_hash)

    with pytest.raises(Unauthenticated):  # a wrong password never rewrites the hash
        await log_in(uow, stronger, password="not the password")
    assert (await credentials(uow)).password_hash == old_hash

    await log_in(uow, stronger)

    new_hash = (await credentials(uow)).password_hash
    assert new_hash != old_hash
    assert not stronger.passwords.needs_rehash(new_hash)
    assert stronger.passwords.verify(new_hash, PASSWORD)
    await log_in(uow, stronger)
    assert (await credentials(uow)).password_hash == new_hash  # current hashes stay put


async def test_after_a_lockout_runs_out_one_wrong_password_does_not_lock_again(
    clean_db: AsyncEngine, policy: services.AuthPolicy
) -> None:
    clock = FakeClock(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))

    def uow() -> services.UnitOfWork:
        return services.UnitOfWork(clean_db, clock=clock)

    await sign_up(uow, policy)
    for _ in range(policy.max_failed_logins):
        with pytest.raises(Unauthenticated):
            await log_in(uow, policy, password="not the password")
    with pytest.raises(RateLimited):
        await log_in(uow, policy)

    clock.now += policy.lockout + timedelta(seconds=1)
    with pytest.raises(Unauthenticated):
        await log_in(uow, policy, password="not the password")
    assert (await log_in(uow, policy)).access_token


# --- bearer tokens: the session must still be active ---------------------------------------


def authenticator(
    engine: AsyncEngine,
    policy: services.AuthPolicy,
    *,
    cache_seconds: float = 60.0,
    clock: services.Clock = services.utc_now,
) -> services.Authenticator:
    return services.Authenticator(
        engine,
        policy.tokens,
        services.RevocationList(None),
        cache_seconds=cache_seconds,
        clock=clock,
    )


@asynccontextmanager
async def session_reads(engine: AsyncEngine) -> AsyncIterator[list[str]]:
    """The statements that read a session by id, while the block runs."""
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "\nFROM sessions \nWHERE" in statement:
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", before)


async def ended(auth: services.Authenticator, token: str) -> tuple[str, str]:
    with pytest.raises(Unauthenticated) as caught:
        await auth.user_from_bearer(token)
    return caught.value.reason, caught.value.message


async def test_logout_stops_the_sessions_access_tokens_at_once_and_only_them(
    clean_db: AsyncEngine, uow: Uow, policy: services.AuthPolicy
) -> None:
    await sign_up(uow, policy)
    phone = await log_in(uow, policy)
    laptop = await log_in(uow, policy)
    auth = authenticator(clean_db, policy)  # a long cache: only the notification can help
    caller = await auth.user_from_bearer(phone.access_token)
    assert caller.session_id == phone.session_id

    await services.log_out(services.LogOut(caller=caller), uow())

    assert await ended(auth, phone.access_token) == (Reason.TOKEN_INVALID, "the session has ended")
    assert (await auth.user_from_bearer(laptop.access_token)).session_id == laptop.session_id
    # A fresh authenticator (another process) reads the revocation from the database.
    assert await ended(authenticator(clean_db, policy), phone.access_token) == (
        Reason.TOKEN_INVALID,
        "the session has ended",
    )


async def test_refresh_token_reuse_stops_every_access_token_of_the_session_at_once(
    clean_db: AsyncEngine, uow: Uow, policy: services.AuthPolicy
) -> None:
    await sign_up(uow, policy)
    first = await log_in(uow, policy)
    auth = authenticator(clean_db, policy)
    second = await refresh(uow(), policy, first.refresh_token)
    for tokens in (first, second):
        assert (await auth.user_from_bearer(tokens.access_token)).session_id == first.session_id

    assert await refused(uow(), policy, first.refresh_token) == Reason.REFRESH_TOKEN_REUSED

    for tokens in (first, second):
        assert await ended(auth, tokens.access_token) == (
            Reason.TOKEN_INVALID,
            "the session has ended",
        )


async def test_a_session_ended_by_another_process_is_refused_within_the_cache_time(
    clean_db: AsyncEngine, uow: Uow, policy: services.AuthPolicy
) -> None:
    await sign_up(uow, policy)
    tokens = await log_in(uow, policy)
    auth = authenticator(clean_db, policy, cache_seconds=1.0)
    await auth.user_from_bearer(tokens.access_token)
    async with uow() as u:  # no notification reaches this process
        await u.users.revoke_session(tokens.session_id, "elsewhere")
        await u.commit()

    await auth.user_from_bearer(tokens.access_token)  # still cached
    await asyncio.sleep(1.05)
    assert await ended(auth, tokens.access_token) == (Reason.TOKEN_INVALID, "the session has ended")


async def test_a_busy_client_costs_one_session_read_per_cache_period(
    clean_db: AsyncEngine, uow: Uow, policy: services.AuthPolicy
) -> None:
    await sign_up(uow, policy)
    tokens = await log_in(uow, policy)
    auth = authenticator(clean_db, policy, cache_seconds=1.0)

    async with session_reads(clean_db) as reads:
        callers = await asyncio.gather(
            *(auth.user_from_bearer(tokens.access_token) for _ in range(20))
        )
        for _ in range(20):
            await auth.user_from_bearer(tokens.access_token)
        assert len(reads) == 1
        await asyncio.sleep(1.05)
        await auth.user_from_bearer(tokens.access_token)
        assert len(reads) == 2
    assert {c.session_id for c in callers} == {tokens.session_id}


async def test_an_expired_or_unknown_session_refuses_its_access_tokens(
    clean_db: AsyncEngine, uow: Uow, policy: services.AuthPolicy
) -> None:
    await sign_up(uow, policy)
    tokens = await log_in(uow, policy)
    clock = FakeClock(tokens.refresh_token_expires_at - timedelta(seconds=1))
    auth = authenticator(clean_db, policy, clock=clock)
    assert (await auth.user_from_bearer(tokens.access_token)).session_id == tokens.session_id

    clock.now = tokens.refresh_token_expires_at
    assert await ended(auth, tokens.access_token) == (
        Reason.TOKEN_EXPIRED,
        "the session has expired",
    )

    user_id = policy.tokens.verify(tokens.access_token).user_id
    no_session = policy.tokens.issue(user_id, uuid.uuid4()).token
    assert await ended(auth, no_session) == (Reason.TOKEN_INVALID, "the session has ended")


async def test_a_database_outage_during_authentication_is_unavailable(
    policy: services.AuthPolicy, pki: DevPkiPaths
) -> None:
    down = create_engine("postgresql://nobody@127.0.0.1:9/nothing")
    try:
        auth = authenticator(down, policy)
        token = policy.tokens.issue(uuid.uuid4(), uuid.uuid4()).token
        with pytest.raises(Unavailable) as bearer:
            await auth.user_from_bearer(token)
        partner = peer_certificate_from_pem(pki.partner_cert.read_bytes())
        with pytest.raises(Unavailable) as certificate:
            await auth.principal_from_certificate(partner)
    finally:
        await down.dispose()

    for caught in (bearer, certificate):
        assert (caught.value.status_name, caught.value.reason) == ("UNAVAILABLE", "UNAVAILABLE")


async def test_idle_unlocked_throttle_rows_can_be_purged(
    clean_db: AsyncEngine, policy: services.AuthPolicy
) -> None:
    clock = FakeClock(datetime(2028, 1, 2, 3, 4, tzinfo=UTC))

    def uow() -> services.UnitOfWork:
        return services.UnitOfWork(clean_db, clock=clock)

    for name, failures in (("idle", 1), ("locked", policy.max_failed_logins)):
        for _ in range(failures):
            with pytest.raises(Unauthenticated):
                await log_in(uow, policy, username=name, password="not the password")
    clock.now += timedelta(minutes=10)
    with pytest.raises(Unauthenticated):
        await log_in(uow, policy, username="recent", password="not the password")

    async with uow() as u:
        removed = await u.users.purge_login_throttle(now=clock.now, idle_for=timedelta(minutes=5))
        await u.commit()

    assert removed == 1
    assert await throttle(uow, "idle") is None
    assert await throttle(uow, "recent") == LoginThrottle(1, None)
    assert (await throttle(uow, "locked")) == LoginThrottle(
        policy.max_failed_logins, clock.now - timedelta(minutes=10) + policy.lockout
    )
