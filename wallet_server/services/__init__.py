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
    ListTransactions,
    LogIn,
    LogOut,
    OpenAccount,
    RefreshSession,
    RegisterUser,
    Transfer,
)
from wallet_server.services._history import get_audit_log, get_transaction, list_transactions
from wallet_server.services._movements import deposit, transfer
from wallet_server.services._results import AccountPage, AuditPage, SessionTokens, TransactionPage
from wallet_server.services._setup import (
    purge_idempotency_records,
    record_unaudited_call,
    register_operator,
    register_partner,
)
from wallet_server.services._unit_of_work import Clock, UnitOfWork, utc_now

__all__ = [
    "AccountPage",
    "AuditPage",
    "AuthPolicy",
    "Authenticator",
    "CallRecord",
    "CertPrincipal",
    "Clock",
    "Deposit",
    "GetAccount",
    "GetAuditLog",
    "GetMe",
    "GetTransaction",
    "ListAccounts",
    "ListTransactions",
    "LogIn",
    "LogOut",
    "OpenAccount",
    "RefreshSession",
    "RegisterUser",
    "RevocationList",
    "SessionTokens",
    "TransactionPage",
    "Transfer",
    "UnitOfWork",
    "begin_call",
    "current_call",
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
    "purge_idempotency_records",
    "record_unaudited_call",
    "refresh_session",
    "register",
    "register_operator",
    "register_partner",
    "transfer",
    "utc_now",
]
