"""Users, sign-in throttling, sessions and refresh tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import case, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from wallet_server.domain import User
from wallet_server.storage._tables import login_throttle, refresh_tokens, sessions, users


@dataclass(frozen=True, slots=True)
class UserCredentials:
    user: User
    password_hash: str


@dataclass(frozen=True, slots=True)
class LoginThrottle:
    """Consecutive failed sign-ins of one normalized username (existing or not)."""

    failures: int
    locked_until: datetime | None

    def locked_at(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now


@dataclass(frozen=True, slots=True)
class SessionRow:
    session_id: UUID
    user_id: UUID
    device_name: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class RefreshTokenRow:
    session: SessionRow
    used_at: datetime | None


def _user(row: Any) -> User:
    return User(
        user_id=row.user_id,
        username=row.username,
        display_name=row.display_name,
        kyc_tier=row.kyc_tier,
        totp_enabled=row.totp_enabled,
        created_at=row.created_at,
    )


def _session(row: Any) -> SessionRow:
    return SessionRow(
        session_id=row.session_id,
        user_id=row.user_id,
        device_name=row.device_name,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


class UserRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(
        self, *, user_id: UUID, username: str, password_hash: str, display_name: str
    ) -> User | None:
        """Insert a user; None when the username is taken."""
        stmt = (
            pg_insert(users)
            .values(
                user_id=user_id,
                username=username,
                password_hash=password_hash,
                display_name=display_name,
            )
            .on_conflict_do_nothing(index_elements=[users.c.username])
            .returning(*users.c)
        )
        row = (await self._conn.execute(stmt)).first()
        return None if row is None else _user(row)

    async def get(self, user_id: UUID) -> User | None:
        row = (await self._conn.execute(select(users).where(users.c.user_id == user_id))).first()
        return None if row is None else _user(row)

    async def credentials(self, username: str) -> UserCredentials | None:
        """The user and password hash, read without locking anything (sign-in verifies the
        password outside any transaction)."""
        row = (await self._conn.execute(select(users).where(users.c.username == username))).first()
        if row is None:
            return None
        return UserCredentials(user=_user(row), password_hash=row.password_hash)

    async def user_id_by_username(self, username: str) -> UUID | None:
        row = (
            await self._conn.execute(select(users.c.user_id).where(users.c.username == username))
        ).first()
        return None if row is None else row.user_id

    async def replace_password_hash(self, user_id: UUID, *, old: str, new: str) -> bool:
        """Store ``new`` only if the stored hash is still ``old`` (a rehash must not undo a
        password change that happened meanwhile). Whether it was stored."""
        result = await self._conn.execute(
            update(users)
            .where(users.c.user_id == user_id, users.c.password_hash == old)
            .values(password_hash=new)
        )
        return result.rowcount == 1

    # --- sign-in throttling (keyed by normalized username, whether or not the user exists) ---

    async def login_throttle(self, username: str) -> LoginThrottle | None:
        row = (
            await self._conn.execute(
                select(login_throttle.c.failures, login_throttle.c.locked_until).where(
                    login_throttle.c.username == username
                )
            )
        ).first()
        return None if row is None else LoginThrottle(row.failures, row.locked_until)

    async def begin_login_attempt(
        self, username: str, *, now: datetime, max_failures: int, lapse_after: timedelta
    ) -> bool:
        """Take a place for one sign-in attempt whose password is about to be checked, in a
        single atomic upsert: refused (False) while the name is locked, or when its failures
        and the attempts already in flight reach ``max_failures`` (each of those could be
        one more failure). Every server process shares the count. A place lapses after
        ``lapse_after``, should its attempt never record an outcome."""
        t = login_throttle.c
        first = pg_insert(login_throttle).values(
            username=username,
            failures=0,
            updated_at=now,
            in_flight=1,
            in_flight_until=now + lapse_after,
        )
        # In DO UPDATE, login_throttle.* is the stored row. A lockout that has run out
        # counts no failures (the next failure starts a fresh count).
        lapsed = func.coalesce(t.in_flight_until <= now, True)
        in_flight = case((lapsed, 0), else_=t.in_flight)
        # Failures beyond a limit lowered since count as one short of it: the name is locked
        # by its next failure, not refused for ever without a lockout.
        failures = case((t.locked_until <= now, 0), else_=func.least(t.failures, max_failures - 1))
        stmt = first.on_conflict_do_update(
            index_elements=[t.username],
            set_={
                "in_flight": in_flight + 1,
                "in_flight_until": now + lapse_after,
                "updated_at": now,
            },
            where=func.coalesce(t.locked_until <= now, True)
            & (failures + in_flight < max_failures),
        ).returning(t.in_flight)
        return (await self._conn.execute(stmt)).first() is not None

    async def end_login_attempt(self, username: str) -> None:
        """Give back the place of an attempt that ended without an outcome (cancelled)."""
        t = login_throttle.c
        await self._conn.execute(
            update(login_throttle)
            .where(t.username == username)
            .values(in_flight=func.greatest(t.in_flight - 1, 0))
        )

    async def record_login_failure(
        self, username: str, *, now: datetime, max_failures: int, lockout: timedelta
    ) -> LoginThrottle:
        """Count one failed sign-in in a single atomic upsert, giving back its attempt's
        place; reaching ``max_failures`` locks the name until ``now + lockout``. A lockout
        that has run out starts a fresh count."""
        t = login_throttle.c
        locked_until = now + lockout
        first = pg_insert(login_throttle).values(
            username=username,
            failures=1,
            locked_until=locked_until if max_failures <= 1 else None,
            updated_at=now,
        )
        # In DO UPDATE, login_throttle.* is the stored row.
        failures = case((t.locked_until <= now, 1), else_=t.failures + 1)
        stmt = first.on_conflict_do_update(
            index_elements=[t.username],
            set_={
                "failures": failures,
                "locked_until": case((failures >= max_failures, locked_until), else_=None),
                "updated_at": now,
                "in_flight": func.greatest(t.in_flight - 1, 0),
            },
        ).returning(t.failures, t.locked_until)
        row = (await self._conn.execute(stmt)).one()
        return LoginThrottle(row.failures, row.locked_until)

    async def clear_login_throttle(self, username: str) -> None:
        """A successful sign-in forgets the failures."""
        await self._conn.execute(
            delete(login_throttle).where(login_throttle.c.username == username)
        )

    async def purge_login_throttle(self, *, now: datetime, idle_for: timedelta) -> int:
        """Forget names untouched for ``idle_for`` and not locked (unknown names would pile up
        otherwise). Returns how many were removed."""
        t = login_throttle.c
        result = await self._conn.execute(
            delete(login_throttle).where(
                t.updated_at < now - idle_for,
                or_(t.locked_until.is_(None), t.locked_until <= now),
            )
        )
        return result.rowcount

    async def add_session(
        self, *, session_id: UUID, user_id: UUID, device_name: str, expires_at: datetime
    ) -> None:
        await self._conn.execute(
            insert(sessions).values(
                session_id=session_id,
                user_id=user_id,
                device_name=device_name,
                expires_at=expires_at,
            )
        )

    async def add_refresh_token(self, *, token_hash: bytes, session_id: UUID) -> None:
        await self._conn.execute(
            insert(refresh_tokens).values(token_hash=token_hash, session_id=session_id)
        )

    async def session(self, session_id: UUID) -> SessionRow | None:
        """One session by primary key, unlocked (bearer-token checks)."""
        row = (
            await self._conn.execute(select(sessions).where(sessions.c.session_id == session_id))
        ).first()
        return None if row is None else _session(row)

    async def refresh_token_for_update(self, token_hash: bytes) -> RefreshTokenRow | None:
        """The token and its session, both locked so two refreshes cannot both succeed."""
        stmt = (
            select(refresh_tokens.c.used_at, sessions)
            .join(sessions, sessions.c.session_id == refresh_tokens.c.session_id)
            .where(refresh_tokens.c.token_hash == token_hash)
            .with_for_update()
        )
        row = (await self._conn.execute(stmt)).first()
        if row is None:
            return None
        return RefreshTokenRow(session=_session(row), used_at=row.used_at)

    async def mark_refresh_token_used(self, token_hash: bytes) -> None:
        await self._conn.execute(
            update(refresh_tokens)
            .where(refresh_tokens.c.token_hash == token_hash)
            .values(used_at=func.now())
        )

    async def revoke_session(self, session_id: UUID, reason: str) -> None:
        await self._conn.execute(
            update(sessions)
            .where(sessions.c.session_id == session_id, sessions.c.revoked_at.is_(None))
            .values(revoked_at=func.now(), revoke_reason=reason)
        )
