"""Users, sign-in sessions and refresh tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from wallet_server.domain import User
from wallet_server.storage._tables import refresh_tokens, sessions, users


@dataclass(frozen=True, slots=True)
class UserCredentials:
    user: User
    password_hash: str
    failed_logins: int
    locked_until: datetime | None


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

    async def credentials_for_update(self, username: str) -> UserCredentials | None:
        row = (
            await self._conn.execute(
                select(users).where(users.c.username == username).with_for_update()
            )
        ).first()
        if row is None:
            return None
        return UserCredentials(
            user=_user(row),
            password_hash=row.password_hash,
            failed_logins=row.failed_logins,
            locked_until=row.locked_until,
        )

    async def user_id_by_username(self, username: str) -> UUID | None:
        row = (
            await self._conn.execute(select(users.c.user_id).where(users.c.username == username))
        ).first()
        return None if row is None else row.user_id

    async def record_login_failure(self, user_id: UUID, locked_until: datetime | None) -> None:
        await self._conn.execute(
            update(users)
            .where(users.c.user_id == user_id)
            .values(failed_logins=users.c.failed_logins + 1, locked_until=locked_until)
        )

    async def record_login_success(self, user_id: UUID, password_hash: str | None) -> None:
        values: dict[str, Any] = {"failed_logins": 0, "locked_until": None}
        if password_hash is not None:
            values["password_hash"] = password_hash
        await self._conn.execute(update(users).where(users.c.user_id == user_id).values(values))

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
