"""Service-tier fixtures: use cases against the real, migrated database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from uuid import UUID, uuid4

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from wallet_server import services
from wallet_server.domain import ALL_PARTNER_SCOPES, Money, PartnerPrincipal, UserPrincipal
from wallet_server.security import AccessTokenCodec, PasswordHasher

TOKEN_KEY = b"k" * 32


@pytest.fixture
def uow(clean_db: AsyncEngine) -> Callable[[], services.UnitOfWork]:
    return lambda: services.UnitOfWork(clean_db)


@pytest.fixture(scope="session")
def policy() -> services.AuthPolicy:
    return services.AuthPolicy(
        passwords=PasswordHasher.for_tests(),
        tokens=AccessTokenCodec({"t1": TOKEN_KEY}, "t1", timedelta(minutes=15)),
        session_lifetime=timedelta(days=30),
        max_failed_logins=3,
        lockout=timedelta(minutes=15),
    )


class Ledger:
    """Small helpers to set up users, accounts and money through the use cases."""

    def __init__(self, uow: Callable[[], services.UnitOfWork], policy: services.AuthPolicy):
        self.uow = uow
        self.policy = policy

    async def user(self, name: str) -> UserPrincipal:
        user = await services.register(
            services.RegisterUser(name, "password-" + name * 2, name.title()),
            self.uow(),
            self.policy,
        )
        return UserPrincipal(user_id=user.user_id, session_id=uuid4())

    async def account(self, caller: UserPrincipal, currency: str = "USD") -> UUID:
        account = await services.open_account(
            services.OpenAccount(caller=caller, request_id=uuid4(), currency=currency),
            self.uow(),
        )
        return account.account_id

    async def partner(self, name: str = "acme") -> PartnerPrincipal:
        partner_id = await services.register_partner(self.uow(), name, ALL_PARTNER_SCOPES)
        return PartnerPrincipal(partner_id=partner_id, name=name, scopes=ALL_PARTNER_SCOPES)

    async def deposit(
        self, partner: PartnerPrincipal, account_id: UUID, amount_minor: int, currency: str = "USD"
    ) -> None:
        await services.deposit(
            services.Deposit(
                caller=partner,
                request_id=uuid4(),
                account_id=account_id,
                amount=Money(currency, amount_minor),
                external_reference="test",
            ),
            self.uow(),
        )

    async def balance(self, caller: UserPrincipal, account_id: UUID) -> int:
        account = await services.get_account(
            services.GetAccount(caller=caller, account_id=account_id), self.uow()
        )
        return account.available


@pytest.fixture
def ledger(uow: Callable[[], services.UnitOfWork], policy: services.AuthPolicy) -> Ledger:
    return Ledger(uow, policy)
