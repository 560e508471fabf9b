"""Who may call what: each method's required kind of caller and, for partners, scope."""

from __future__ import annotations

from enum import Enum

from wallet_server.domain import (
    SCOPE_DEPOSIT,
    SCOPE_MERCHANT,
    SCOPE_PAYOUTS,
    SCOPE_TRANSFERS,
)


class Access(Enum):
    PUBLIC = "public"  # no credentials: sign-up and sign-in
    USER = "user"  # bearer access token
    PARTNER = "partner"  # partner client certificate (mTLS port)
    OPERATOR = "operator"  # operator client certificate (mTLS port)


_PUBLIC_METHODS = frozenset(
    {
        "/wallet.v1.AuthService/Register",
        "/wallet.v1.AuthService/Login",
        "/wallet.v1.AuthService/VerifySecondFactor",
        "/wallet.v1.AuthService/RefreshSession",
    }
)

# As partner.proto documents each RPC; None: any registered partner (its own data only).
_PARTNER_SCOPES: dict[str, str | None] = {
    "Deposit": SCOPE_DEPOSIT,
    "CompleteWithdrawal": SCOPE_PAYOUTS,
    "FailWithdrawal": SCOPE_PAYOUTS,
    "CreateOrder": SCOPE_MERCHANT,
    "GetOrder": SCOPE_MERCHANT,
    "RefundPayment": SCOPE_MERCHANT,
    "CreateTransfers": SCOPE_TRANSFERS,
    "ListSettlementAccounts": None,
    "WatchEvents": None,
}

_SERVICE_ACCESS = {
    "wallet.v1.AuthService": Access.USER,
    "wallet.v1.WalletService": Access.USER,
    "wallet.v1.PartnerService": Access.PARTNER,
    "wallet.v1.AdminService": Access.OPERATOR,
}


def access_for(method: str) -> tuple[Access, str | None]:
    """``/wallet.v1.Service/Method`` → (required access, required partner scope)."""
    if method in _PUBLIC_METHODS:
        return Access.PUBLIC, None
    service, _, name = method.lstrip("/").partition("/")
    # Unknown services fall to the strictest rule.
    access = _SERVICE_ACCESS.get(service, Access.OPERATOR)
    if access is Access.PARTNER:
        # A partner RPC without an entry needs every scope: new RPCs are closed by default.
        return access, _PARTNER_SCOPES.get(name, "__unlisted__")
    return access, None
