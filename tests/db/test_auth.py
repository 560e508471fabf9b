"""Sign-up and sign-in on the real database: validation, unique names, refresh-token rotation
with reuse detection, logout, session expiry, lockout bookkeeping and password rehashing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from wallet_server import services
from wallet_server.domain import (
    AlreadyExists,
    InvalidArgument,
    RateLimited,
    Reason,
    Unauthenticated,
    UserPrincipal,
)
from wallet_server.security import PasswordHasher
from wallet_server.storage.repositories import UserCredentials

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
        found = await u.users.credentials_for_update(username)
    assert found is not None
    return found


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
    assert (await credentials(uow)).failed_logins == 2  # committed although the call failed

    await log_in(uow, policy)
    assert (await credentials(uow)).failed_logins == 0

    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await log_in(uow, policy, password="not the password")
    assert (await log_in(uow, policy)).access_token  # two more failures: not locked


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
