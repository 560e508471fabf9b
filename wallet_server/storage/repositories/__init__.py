"""Repositories: the only code that speaks SQL. Each takes an open AsyncConnection."""

from wallet_server.storage.repositories._audit import AuditEntry, AuditRepository, NewAuditEntry
from wallet_server.storage.repositories._idempotency import IdempotencyRepository, StoredResponse
from wallet_server.storage.repositories._ledger import LedgerRepository, TransactionPage
from wallet_server.storage.repositories._principals import PrincipalRepository
from wallet_server.storage.repositories._users import (
    RefreshTokenRow,
    SessionRow,
    UserCredentials,
    UserRepository,
)

__all__ = [
    "AuditEntry",
    "AuditRepository",
    "IdempotencyRepository",
    "LedgerRepository",
    "NewAuditEntry",
    "PrincipalRepository",
    "RefreshTokenRow",
    "SessionRow",
    "StoredResponse",
    "TransactionPage",
    "UserCredentials",
    "UserRepository",
]
