"""Use cases: one async function per operation, taking a command and a unit of work."""

from wallet_server.services._accounts import get_account, list_accounts, open_account
from wallet_server.services._auth import (
    AuthPolicy,
    get_me,
    log_in,
    log_out,
    refresh_session,
    register,
)
from wallet_server.services._authentication import Authenticator, CertPrincipal, RevocationList
from wallet_server.services._call import CallRecord, begin_call, current_call, note_resources
from wallet_server.services._commands import (
    Deposit,
    GetAccount,
    GetAuditLog,
    GetMe,
    GetTransaction,
    ListAccounts,
    ListSettlementAccounts,
    ListTransactions,
    LogIn,
    LogOut,
    OpenAccount,
    RefreshSession,
    RegisterUser,
    Transfer,
)
from wallet_server.services._events import publish
from wallet_server.services._history import get_audit_log, get_transaction, list_transactions
from wallet_server.services._movements import deposit, transfer
from wallet_server.services._results import (
    AccountPage,
    AuditPage,
    SessionTokens,
    SettlementAccountPage,
    TransactionPage,
)
from wallet_server.services._setup import (
    purge_idempotency_records,
    record_unaudited_call,
    register_operator,
    register_partner,
)
from wallet_server.services._streams import (
    EventHub,
    PartnerEvent,
    WatchAccount,
    WatchPartnerEvents,
    watch_account,
    watch_partner_events,
)
from wallet_server.services._unit_of_work import Clock, UnitOfWork, utc_now
from wallet_server.storage import is_unavailable as database_unavailable
from wallet_server.storage import raise_if_cancelling

__all__ = [
    "AccountPage",
    "AuditPage",
    "AuthPolicy",
    "Authenticator",
    "CallRecord",
    "CertPrincipal",
    "Clock",
    "Deposit",
    "EventHub",
    "GetAccount",
    "GetAuditLog",
    "GetMe",
    "GetTransaction",
    "ListAccounts",
    "ListSettlementAccounts",
    "ListTransactions",
    "LogIn",
    "LogOut",
    "OpenAccount",
    "PartnerEvent",
    "RefreshSession",
    "RegisterUser",
    "RevocationList",
    "SessionTokens",
    "SettlementAccountPage",
    "TransactionPage",
    "Transfer",
    "UnitOfWork",
    "WatchAccount",
    "WatchPartnerEvents",
    "begin_call",
    "current_call",
    "database_unavailable",
    "deposit",
    "get_account",
    "get_audit_log",
    "get_me",
    "get_transaction",
    "list_accounts",
    "list_transactions",
    "log_in",
    "log_out",
    "note_resources",
    "open_account",
    "publish",
    "purge_idempotency_records",
    "raise_if_cancelling",
    "record_unaudited_call",
    "refresh_session",
    "register",
    "register_operator",
    "register_partner",
    "transfer",
    "utc_now",
    "watch_account",
    "watch_partner_events",
]

# Money-movement features: each module lists its own API in its __all__.
from wallet_server.services import (
    _balance_deltas,
    _batch,
    _batch_slots,
    _caller_limits,
    _exchange,
    _movement_groups,
    _orders,
    _promotions,
    _reversals,
    _settlement_accounts,
    _statements,
    _verification,
    _withdrawals,
)
from wallet_server.services._balance_deltas import *  # noqa: F403
from wallet_server.services._batch import *  # noqa: F403
from wallet_server.services._batch_slots import *  # noqa: F403
from wallet_server.services._caller_limits import *  # noqa: F403
from wallet_server.services._exchange import *  # noqa: F403
from wallet_server.services._movement_groups import *  # noqa: F403
from wallet_server.services._orders import *  # noqa: F403
from wallet_server.services._promotions import *  # noqa: F403
from wallet_server.services._reversals import *  # noqa: F403
from wallet_server.services._settlement_accounts import *  # noqa: F403
from wallet_server.services._statements import *  # noqa: F403
from wallet_server.services._verification import *  # noqa: F403
from wallet_server.services._withdrawals import *  # noqa: F403

__all__ += _balance_deltas.__all__
__all__ += _batch.__all__
__all__ += _batch_slots.__all__
__all__ += _caller_limits.__all__
__all__ += _exchange.__all__
__all__ += _orders.__all__
__all__ += _promotions.__all__
__all__ += _reversals.__all__
__all__ += _settlement_accounts.__all__
__all__ += _statements.__all__
__all__ += _movement_groups.__all__
__all__ += _verification.__all__
__all__ += _withdrawals.__all__
