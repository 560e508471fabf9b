"""The event log (outbox): appended with each change, numbered later by one sequencer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from wallet_server.storage._driver import Driver, WritesAtCommit, fetch_rows
from wallet_server.storage._tables import event_sequence, outbox
from wallet_server.storage.repositories._bulk import (
    APPEND_EVENTS,
    EventText,
    event_params,
    with_statement,
)

EVENTS_CHANNEL = "wallet_events"  # NOTIFY payload: the highest sequence now readable

_SEQUENCER_LOCK = 7746287
SEQUENCER_BUSY = -1  # another server is numbering right now
_TRY_LOCK = "SELECT pg_try_advisory_xact_lock(:key) AS locked"

# Numbers committed, unnumbered events in event_id order, taking whole writes (rows of
# ``outbox_unsequenced``) in order until about ``:events`` events. Runs only while holding
# the sequencer lock, in a statement that starts after the lock was taken, so its snapshot
# sees every number given before, and no other sequencer numbers events meanwhile. Writes
# not committed yet are not seen, and are numbered by a later step.
# The writes are picked into an array first and deleted by primary key: as a join on the
# waiting rows, statistics taken while none waited (estimate: 1 row) made the planner
# rescan the pick once per waiting row, quadratic in the backlog.
_SEQUENCE = """
    WITH picked AS (
        DELETE FROM outbox_unsequenced
        WHERE write_id = ANY(ARRAY(
            SELECT w.write_id FROM (
                SELECT write_id,
                    sum(cardinality(event_ids)) OVER (ORDER BY write_id)
                        - cardinality(event_ids) AS before
                FROM outbox_unsequenced
            ) AS w
            WHERE w.before < :events
        ))
        RETURNING event_ids
    ),
    numbered AS (
        INSERT INTO event_sequence (sequence, event_id)
        SELECT base.top + row_number() OVER (ORDER BY e.event_id), e.event_id
        FROM picked, unnest(picked.event_ids) AS e(event_id),
            (SELECT coalesce(max(sequence), 0) AS top FROM event_sequence) AS base
        RETURNING sequence
    ),
    top AS (SELECT max(sequence) AS top FROM numbered)
    -- The notification goes out when the numbers commit; readers wake for the new top.
    SELECT top.top, CASE WHEN top.top IS NOT NULL THEN pg_notify(:channel, top.top::text) END
    FROM top
    """


# Numbered events: their numbers joined to their rows.
_NUMBERED = event_sequence.join(outbox, outbox.c.event_id == event_sequence.c.event_id)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    sequence: int
    account_ids: tuple[UUID, ...]
    partner_id: UUID | None
    payload: str  # JSON text


class EventRepository:
    """Numbering runs on the driver connection (it follows nearly every commit); ``driver``
    is the psycopg connection beneath ``conn``, in the same transaction. Appending goes out
    with the commit (``at_commit``: every money call appends)."""

    def __init__(self, conn: AsyncConnection, driver: Driver, at_commit: WritesAtCommit) -> None:
        self._conn = conn
        self._driver = driver
        self._at_commit = at_commit

    def append(self, rows: Sequence[EventText]) -> None:
        """Rows of (type, partner_id, account_ids, payload as JSON text), in one statement,
        in order, with the commit."""
        if rows:
            self._at_commit.add(with_statement(APPEND_EVENTS), event_params(rows))

    async def number_committed(self, events: int = 5000) -> int | None:
        """Give the next sequence numbers to committed events, about ``events`` of them
        (whole writes: the last one taken may go past); the new top, or None.

        One sequencer at a time across all servers (a transaction-scoped advisory lock);
        a server that does not get the lock leaves the work to the one that has it.
        """
        (held,) = await fetch_rows(self._driver, _TRY_LOCK, {"key": _SEQUENCER_LOCK})
        if not held.locked:
            return SEQUENCER_BUSY
        (numbered,) = await fetch_rows(
            self._driver, _SEQUENCE, {"events": events, "channel": EVENTS_CHANNEL}
        )
        return None if numbered.top is None else int(numbered.top)

    async def top_sequence(self) -> int:
        row = (
            await self._conn.execute(text("SELECT coalesce(max(sequence), 0) FROM event_sequence"))
        ).one()
        return int(row[0])

    async def read(
        self,
        *,
        after: int,
        limit: int,
        account_id: UUID | None = None,
        partner_id: UUID | None = None,
        up_to: int | None = None,
    ) -> list[StoredEvent]:
        """Numbered events after ``after`` (for one account, one partner, or all), in order,
        with the payload as JSON text."""
        stmt = (
            select(
                event_sequence.c.sequence,
                outbox.c.account_ids,
                outbox.c.partner_id,
                outbox.c.payload,
            )
            .select_from(_NUMBERED)
            .where(event_sequence.c.sequence > after)
        )
        if up_to is not None:
            stmt = stmt.where(event_sequence.c.sequence <= up_to)
        if account_id is not None:
            stmt = stmt.where(outbox.c.account_ids.contains([account_id]))
        if partner_id is not None:
            stmt = stmt.where(outbox.c.partner_id == partner_id)
        stmt = stmt.order_by(event_sequence.c.sequence).limit(limit)
        return [
            StoredEvent(row.sequence, tuple(row.account_ids), row.partner_id, row.payload)
            for row in await self._conn.execute(stmt)
        ]
