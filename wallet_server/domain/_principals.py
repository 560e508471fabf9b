"""Who is calling: a signed-in user, a partner back end or an operator."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID


@dataclass(frozen=True, slots=True)
class UserPrincipal:
    user_id: UUID
    session_id: UUID

    @property
    def key(self) -> str:
        return f"user:{self.user_id}"


@dataclass(frozen=True, slots=True)
class PartnerPrincipal:
    partner_id: UUID
    name: str
    scopes: frozenset[str]

    @property
    def key(self) -> str:
        return f"partner:{self.name}"


@dataclass(frozen=True, slots=True)
class OperatorPrincipal:
    operator_id: UUID
    name: str

    @property
    def key(self) -> str:
        return f"operator:{self.name}"


Principal = UserPrincipal | PartnerPrincipal | OperatorPrincipal

# Partner scopes: what a partner's certificate may do (PartnerScope in admin.proto).
SCOPE_DEPOSIT = "deposits"
SCOPE_PAYOUTS = "payouts"
SCOPE_MERCHANT = "merchant"
SCOPE_TRANSFERS = "transfers"
ALL_PARTNER_SCOPES = frozenset({SCOPE_DEPOSIT, SCOPE_PAYOUTS, SCOPE_MERCHANT, SCOPE_TRANSFERS})
