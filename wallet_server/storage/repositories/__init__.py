"""Repositories: the only code that speaks SQL. Each takes an open AsyncConnection."""

from wallet_server.storage.repositories._audit import AuditEntry, AuditRepository, NewAuditEntry
from wallet_server.storage.repositories._batch_writes import (
    BatchReads,
    BatchRepository,
    BatchWrites,
)
from wallet_server.storage.repositories._events import (
    EVENTS_CHANNEL,
    SEQUENCER_BUSY,
    EventRepository,
    StoredEvent,
)
from wallet_server.storage.repositories._exchange import ExchangeRepository
from wallet_server.storage.repositories._idempotency import IdempotencyRepository, StoredResponse
from wallet_server.storage.repositories._ledger import Fold, LedgerRepository, TransactionPage
from wallet_server.storage.repositories._movement_groups import (
    EventRow,
    GroupReads,
    GroupWrites,
    IdempotencyKey,
    MovementGroupRepository,
)
from wallet_server.storage.repositories._orders import LockedOrder, OrderRepository
from wallet_server.storage.repositories._principals import PrincipalRepository
from wallet_server.storage.repositories._promotions import PromotionRepository
from wallet_server.storage.repositories._statements import (
    StatementLine,
    StatementRepository,
    StatementTotals,
)
from wallet_server.storage.repositories._users import (
    LoginThrottle,
    RefreshTokenRow,
    SessionRow,
    UserCredentials,
    UserRepository,
)
from wallet_server.storage.repositories._verification import VerificationRepository
from wallet_server.storage.repositories._withdrawals import WithdrawalRepository

__all__ = [
    "EVENTS_CHANNEL",
    "SEQUENCER_BUSY",
    "AuditEntry",
    "AuditRepository",
    "BatchReads",
    "BatchRepository",
    "BatchWrites",
    "EventRepository",
    "EventRow",
    "ExchangeRepository",
    "Fold",
    "GroupReads",
    "GroupWrites",
    "IdempotencyKey",
    "IdempotencyRepository",
    "LedgerRepository",
    "LockedOrder",
    "LoginThrottle",
    "MovementGroupRepository",
    "NewAuditEntry",
    "OrderRepository",
    "PrincipalRepository",
    "PromotionRepository",
    "RefreshTokenRow",
    "SessionRow",
    "StatementLine",
    "StatementRepository",
    "StatementTotals",
    "StoredEvent",
    "StoredResponse",
    "TransactionPage",
    "UserCredentials",
    "UserRepository",
    "VerificationRepository",
    "WithdrawalRepository",
]
