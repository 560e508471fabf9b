"""Partners and operators, found by the SPIFFE ID of their client certificate."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from wallet_server.domain import OperatorPrincipal, PartnerPrincipal
from wallet_server.storage._tables import operators, partners


class PrincipalRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def partner_by_spiffe_id(self, spiffe_id: str) -> PartnerPrincipal | None:
        row = (
            await self._conn.execute(
                select(partners.c.partner_id, partners.c.name, partners.c.scopes).where(
                    partners.c.spiffe_id == spiffe_id, partners.c.revoked_at.is_(None)
                )
            )
        ).first()
        if row is None:
            return None
        return PartnerPrincipal(
            partner_id=row.partner_id, name=row.name, scopes=frozenset(row.scopes)
        )

    async def operator_by_spiffe_id(self, spiffe_id: str) -> OperatorPrincipal | None:
        row = (
            await self._conn.execute(
                select(operators.c.operator_id, operators.c.name).where(
                    operators.c.spiffe_id == spiffe_id, operators.c.revoked_at.is_(None)
                )
            )
        ).first()
        if row is None:
            return None
        return OperatorPrincipal(operator_id=row.operator_id, name=row.name)

    async def upsert_partner(
        self, *, partner_id: UUID, name: str, spiffe_id: str, scopes: Iterable[str]
    ) -> UUID:
        """Register (or update the scopes of) a partner; returns its id."""
        insert = pg_insert(partners).values(
            partner_id=partner_id, name=name, spiffe_id=spiffe_id, scopes=sorted(scopes)
        )
        stmt = insert.on_conflict_do_update(
            index_elements=[partners.c.name],
            set_={
                "spiffe_id": insert.excluded.spiffe_id,
                "scopes": insert.excluded.scopes,
                "revoked_at": None,
            },
        ).returning(partners.c.partner_id)
        partner_id_found: UUID = (await self._conn.execute(stmt)).scalar_one()
        return partner_id_found

    async def upsert_operator(self, *, operator_id: UUID, name: str, spiffe_id: str) -> UUID:
        insert = pg_insert(operators).values(
            operator_id=operator_id, name=name, spiffe_id=spiffe_id
        )
        stmt = insert.on_conflict_do_update(
            index_elements=[operators.c.name],
            set_={"spiffe_id": insert.excluded.spiffe_id, "revoked_at": None},
        ).returning(operators.c.operator_id)
        operator_id_found: UUID = (await self._conn.execute(stmt)).scalar_one()
        return operator_id_found
