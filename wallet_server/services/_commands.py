"""Typed commands: what each use case is asked to do, already parsed and validated for shape."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from wallet_server.domain import (
    Money,
    OperatorPrincipal,
    PartnerPrincipal,
    TransactionKind,
    UserPrincipal,
)


@dataclass(frozen=True, slots=True)
class RegisterUser:
    username: str
    password: str
    display_name: str


@dataclass(frozen=True, slots=True)
class LogIn:
    username: str
    password: str
    device_name: str


@dataclass(frozen=True, slots=True)
class RefreshSession:
    refresh_token: str


@dataclass(frozen=True, slots=True)
class LogOut:
    caller: UserPrincipal


@dataclass(frozen=True, slots=True)
class GetMe:
    caller: UserPrincipal


@dataclass(frozen=True, slots=True)
class OpenAccount:
    caller: UserPrincipal
    request_id: UUID
    currency: str


@dataclass(frozen=True, slots=True)
class GetAccount:
    caller: UserPrincipal
    account_id: UUID


@dataclass(frozen=True, slots=True)
class ListAccounts:
    caller: UserPrincipal
    page_size: int
    after: tuple[datetime, UUID] | None


@dataclass(frozen=True, slots=True)
class ListSettlementAccounts:
    caller: PartnerPrincipal
    page_size: int
    after_currency: str | None


@dataclass(frozen=True, slots=True)
class Transfer:
    caller: UserPrincipal
    request_id: UUID
    from_account_id: UUID
    to_account_id: UUID | None
    to_username: str | None
    amount: Money
    memo: str


@dataclass(frozen=True, slots=True)
class Deposit:
    caller: PartnerPrincipal
    request_id: UUID
    account_id: UUID
    amount: Money
    external_reference: str


@dataclass(frozen=True, slots=True)
class GetTransaction:
    caller: UserPrincipal
    transaction_id: UUID


@dataclass(frozen=True, slots=True)
class ListTransactions:
    caller: UserPrincipal
    account_id: UUID
    page_size: int
    before_seq: int | None
    start_time: datetime | None
    end_time: datetime | None
    kinds: tuple[TransactionKind, ...]


@dataclass(frozen=True, slots=True)
class GetAuditLog:
    caller: OperatorPrincipal
    page_size: int
    before_seq: int | None
