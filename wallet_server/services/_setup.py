"""Registering partners and operators (seeding for `dev`, and operator tooling)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from uuid import UUID

from wallet_server.security import operator_spiffe_id, partner_spiffe_id
from wallet_server.services._retry import retry_on_conflict
from wallet_server.services._unit_of_work import UnitOfWork


@retry_on_conflict
async def register_partner(uow: UnitOfWork, name: str, scopes: Iterable[str]) -> UUID:
    async with uow:
        partner_id = await uow.principals.upsert_partner(
            partner_id=uow.new_id(), name=name, spiffe_id=partner_spiffe_id(name), scopes=scopes
        )
        await uow.commit()
        return partner_id


@retry_on_conflict
async def register_operator(uow: UnitOfWork, name: str) -> UUID:
    async with uow:
        operator_id = await uow.principals.upsert_operator(
            operator_id=uow.new_id(), name=name, spiffe_id=operator_spiffe_id(name)
        )
        await uow.commit()
        return operator_id


async def record_unaudited_call(uow: UnitOfWork, code: str) -> None:
    """Audit a call whose effect did not commit (an error, a refused credential)."""
    async with uow:
        await uow.commit(code=code)


async def purge_idempotency_records(uow: UnitOfWork, retention: timedelta) -> int:
    """Forget request ids older than ``retention`` and sign-in failure counts idle for a day
    (unknown names would pile up otherwise); returns how many request ids were removed."""
    async with uow:
        removed = await uow.idempotency.purge_older_than(uow.now() - retention)
        await uow.users.purge_login_throttle(now=uow.now(), idle_for=timedelta(days=1))
        await uow.connection.commit()
        return removed
