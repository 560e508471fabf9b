"""Typed results that are not plain domain objects."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from wallet_server.domain import Account, Transaction
from wallet_server.storage.repositories import AuditEntry


@dataclass(frozen=True, slots=True)
class SessionTokens:
    session_id: UUID
    access_token: str
    access_token_expires_at: datetime
    refresh_token: str
    refresh_token_expires_at: datetime


@dataclass(frozen=True, slots=True)
class AccountPage:
    accounts: tuple[Account, ...]
    next_after: tuple[datetime, UUID] | None


@dataclass(frozen=True, slots=True)
class SettlementAccountPage:
    accounts: tuple[Account, ...]
    next_after_currency: str | None


@dataclass(frozen=True, slots=True)
class TransactionPage:
    transactions: tuple[Transaction, ...]
    next_before_seq: int | None


@dataclass(frozen=True, slots=True)
class AuditPage:
    entries: tuple[AuditEntry, ...]
    next_before_seq: int | None
