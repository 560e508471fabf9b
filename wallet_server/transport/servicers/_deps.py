"""What every servicer needs to run use cases."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from wallet_server.domain import (
    OperatorPrincipal,
    PartnerPrincipal,
    Principal,
    UserPrincipal,
)
from wallet_server.security import SecretBox
from wallet_server.services import (
    Authenticator,
    AuthPolicy,
    BatchSlots,
    Clock,
    EventHub,
    MovementGroups,
    UnitOfWork,
)
from wallet_server.transport._interceptors import current_principal


@dataclass(frozen=True, slots=True)
class Servicers:
    engine: AsyncEngine
    policy: AuthPolicy
    clock: Clock
    authenticator: Authenticator
    secrets: SecretBox  # seals secrets at rest (payout destinations)
    hub: EventHub  # live events for the watch streams
    movements: MovementGroups  # group commit for Transfer and Deposit
    batches: BatchSlots  # CreateTransfers, a few at a time

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.engine, clock=self.clock)


def _caller() -> Principal:
    principal = current_principal()
    if principal is None:  # the authorization interceptor guarantees this never happens
        raise RuntimeError("no authenticated caller")
    return principal


def user_caller() -> UserPrincipal:
    principal = _caller()
    assert isinstance(principal, UserPrincipal)
    return principal


def partner_caller() -> PartnerPrincipal:
    principal = _caller()
    assert isinstance(principal, PartnerPrincipal)
    return principal


def operator_caller() -> OperatorPrincipal:
    principal = _caller()
    assert isinstance(principal, OperatorPrincipal)
    return principal
