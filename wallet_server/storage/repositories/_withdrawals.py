"""Withdrawals persistence: the sealed payout destination of each withdrawal, and routing.

The destination column only ever holds the sealed blob (the services seal and open it); this
module never sees the plaintext.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from wallet_server.domain import SCOPE_PAYOUTS
from wallet_server.storage._tables import partners, withdrawals


class WithdrawalRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def payout_partner(self) -> UUID | None:
        """The partner new withdrawals go to: the first registered active partner with the
        payouts scope; None when there is none."""
        row = (
            await self._conn.execute(
                select(partners.c.partner_id)
                .where(
                    partners.c.revoked_at.is_(None),
                    partners.c.scopes.any_() == SCOPE_PAYOUTS,
                )
                .order_by(partners.c.created_at, partners.c.partner_id)
                .limit(1)
            )
        ).first()
        return None if row is None else row.partner_id

    async def add(
        self,
        *,
        transaction_id: UUID,
        partner_id: UUID,
        sealed_destination: bytes,
        created_at: datetime,
    ) -> None:
        await self._conn.execute(
            withdrawals.insert().values(
                transaction_id=transaction_id,
                partner_id=partner_id,
                destination=sealed_destination,
                created_at=created_at,
            )
        )

    async def sealed_destination(self, transaction_id: UUID, partner_id: UUID) -> bytes | None:
        """The sealed destination of a withdrawal routed to ``partner_id``; None otherwise."""
        found = await self.sealed_destinations(partner_id, (transaction_id,))
        return found.get(transaction_id)

    async def sealed_destinations(
        self, partner_id: UUID, transaction_ids: Collection[UUID]
    ) -> dict[UUID, bytes]:
        """Sealed destinations of those of ``transaction_ids`` routed to ``partner_id``."""
        if not transaction_ids:
            return {}
        rows = await self._conn.execute(
            select(withdrawals.c.transaction_id, withdrawals.c.destination).where(
                withdrawals.c.partner_id == partner_id,
                withdrawals.c.transaction_id.in_(list(set(transaction_ids))),
            )
        )
        return {row.transaction_id: bytes(row.destination) for row in rows}


__all__ = ["WithdrawalRepository"]
