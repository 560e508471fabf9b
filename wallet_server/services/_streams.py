"""Live event streams: numbering committed events and fanning them out to watchers.

Writers append events to the outbox in the transaction of the change. One sequencer at a
time (any server) numbers committed events in order; a number is only ever given to a
committed row, so a reader that resumes "after N" can never miss an event that commits late.
Each server process has one hub: it listens for "new numbers" notifications, reads the new
events once, and hands each to the streams that want it (by account or partner). A stream
first catches up from the database after the client's cursor, then switches to the hub,
skipping what it already sent. Idle streams cost a queue and a task, not a thread or a query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from wallet_server.domain import (
    LedgerEvent,
    PartnerPrincipal,
    PayoutDestination,
    SequencedEvent,
    TransactionKind,
    UserPrincipal,
)
from wallet_server.security import SecretBox
from wallet_server.services._accounts import load_own_account
from wallet_server.services._call import note_resources
from wallet_server.services._caller_limits import CallerLimit
from wallet_server.services._codec import decode_as
from wallet_server.services._unit_of_work import UnitOfWork
from wallet_server.services._withdrawals import payout_destination
from wallet_server.storage import OUTBOX_CHANNEL, listen_forever, raise_if_cancelling
from wallet_server.storage.repositories import EVENTS_CHANNEL, SEQUENCER_BUSY

_log = logging.getLogger(__name__)

CATCH_UP_PAGE = 500
SUBSCRIBER_QUEUE = 1000
FALLBACK_POLL_SECONDS = 1.0  # only in case a notification was lost; not the delivery path
STEP_GATHER_SECONDS = 0.005


@dataclass(eq=False)
class Subscription:
    account_id: UUID | None
    partner_id: UUID | None
    # None wakes the stream without an event (to make it catch up from the database).
    queue: asyncio.Queue[SequencedEvent | None] = field(
        default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE)
    )
    lagging: bool = False  # the queue overflowed: the stream must re-read from the database

    def wake_to_catch_up(self) -> None:
        self.lagging = True
        with contextlib.suppress(asyncio.QueueFull):  # a full queue wakes it anyway
            self.queue.put_nowait(None)

    def offer(self, item: SequencedEvent) -> None:
        if self.lagging:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.lagging = True


def decode_event(payload: Any) -> LedgerEvent:
    return decode_as(LedgerEvent, payload)


class EventHub:
    """One per server process; see the module docstring."""

    def __init__(
        self,
        engine: AsyncEngine,
        database_url: str,
        *,
        streams_per_caller: int,
    ) -> None:
        self._engine = engine
        self._url = database_url
        self._open_streams = CallerLimit(streams_per_caller, "open streams")
        self._top_known = False
        # Indexed by what they watch: dispatch costs per interested stream, not per stream.
        self._by_account: dict[UUID, set[Subscription]] = {}
        self._by_partner: dict[UUID, set[Subscription]] = {}
        self._top = 0
        self._notified_top = 0  # the highest sequence a notification announced
        self._numbering_wanted = asyncio.Event()
        self._reading_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def subscriber_count(self) -> int:
        return sum(map(len, self._by_account.values())) + sum(map(len, self._by_partner.values()))

    async def start(self) -> None:
        # Without a database yet, the first successful read sets the starting point.
        with contextlib.suppress(Exception):
            await self._find_top()
        self._tasks = [
            asyncio.create_task(
                listen_forever(
                    self._url,
                    (OUTBOX_CHANNEL, EVENTS_CHANNEL),
                    self._on_notify,
                    on_connected=self._wake_all,
                )
            ),
            asyncio.create_task(self._run(self._numbering_wanted, self._number)),
            asyncio.create_task(self._run(self._reading_wanted, self._read_new)),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def _wake_all(self) -> None:
        self._numbering_wanted.set()
        self._reading_wanted.set()

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == OUTBOX_CHANNEL:
            self._numbering_wanted.set()
        else:
            with contextlib.suppress(ValueError):
                self._notified_top = max(self._notified_top, int(payload))
            self._reading_wanted.set()

    async def _run(self, wanted: asyncio.Event, work: Callable[[], Any]) -> None:
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # races the wake-up, and then stop() would wait for this task forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FALLBACK_POLL_SECONDS):
                    await wanted.wait()
            # Under load, commits arrive every millisecond or so: one step serves all that
            # arrive in this short wait instead of one step each.
            await asyncio.sleep(STEP_GATHER_SECONDS)
            wanted.clear()
            try:
                await work()
            except Exception as exc:
                raise_if_cancelling(exc)
                _log.warning("event hub step failed; will retry", exc_info=True)
                await asyncio.sleep(0.2)

    async def _number(self) -> None:
        """One numbering transaction per step; the next step comes after the gathering wait.

        After a step that numbered something another is wanted: a full batch may have left
        rows behind, and under load new commits are there by then. A step that finds
        nothing ends the run. The other sequencer being busy may mean it started before our
        events committed: look again shortly rather than wait for the fallback poll.
        """
        async with UnitOfWork(self._engine) as uow:
            top = await uow.events.number_committed()
            await uow.connection.commit()
        if top is None:
            return
        self._numbering_wanted.set()
        if top != SEQUENCER_BUSY:
            self._reading_wanted.set()

    async def _find_top(self) -> None:
        async with UnitOfWork(self._engine) as uow:
            self._top = await uow.events.top_sequence()
        self._top_known = True

    async def _read_new(self) -> None:
        if not self._top_known:
            await self._find_top()
            # Streams that started while the hub could not read may have missed events
            # numbered before this point: send them back to the database to catch up.
            for index in (self._by_account, self._by_partner):
                for subs in index.values():
                    for sub in subs:
                        sub.wake_to_catch_up()
        while True:
            if not self._by_account and not self._by_partner:
                await self._skip_unwatched()
                return
            async with UnitOfWork(self._engine) as uow:
                rows = await uow.events.read(after=self._top, limit=CATCH_UP_PAGE)
            if not rows:
                return
            for row in rows:
                interested = [
                    sub for key in row.account_ids for sub in self._by_account.get(key, ())
                ]
                if row.partner_id is not None:
                    interested += self._by_partner.get(row.partner_id, ())
                if interested:  # only these payloads are parsed
                    item = SequencedEvent(row.sequence, decode_event(orjson.loads(row.payload)))
                    for sub in interested:
                        sub.offer(item)
                self._top = row.sequence

    async def _skip_unwatched(self) -> None:
        """Nobody watches: move the starting point without reading the events.

        The top comes from a notification (sent once its events were committed) or is read
        first, and the subscriptions are checked after: a stream that subscribes later
        catches up from the database, which by then holds everything up to that top.
        """
        top = self._notified_top
        if top <= self._top:
            async with UnitOfWork(self._engine) as uow:
                top = await uow.events.top_sequence()
        if not self._by_account and not self._by_partner:
            self._top = max(self._top, top)

    def stream_of(self, caller: str) -> contextlib.AbstractContextManager[None]:
        """Count one open stream of ``caller`` (a principal's key) while the block runs.

        Each open stream holds memory (about 44 KiB) and a task until its client goes away,
        so one caller may hold only so many in this process; beyond that a new stream is
        refused with RESOURCE_EXHAUSTED before it reads anything."""
        return self._open_streams.hold(caller)

    def subscribe(
        self, *, account_id: UUID | None = None, partner_id: UUID | None = None
    ) -> Subscription:
        sub = Subscription(account_id=account_id, partner_id=partner_id)
        if account_id is not None:
            self._by_account.setdefault(account_id, set()).add(sub)
        elif partner_id is not None:
            self._by_partner.setdefault(partner_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        for index, key in ((self._by_account, sub.account_id), (self._by_partner, sub.partner_id)):
            if key is not None and key in index:
                index[key].discard(sub)
                if not index[key]:
                    del index[key]


async def stream_events(
    engine: AsyncEngine,
    hub: EventHub,
    *,
    after: int,
    account_id: UUID | None = None,
    partner_id: UUID | None = None,
) -> AsyncGenerator[SequencedEvent, None]:
    """Stored events after ``after``, then live ones, in order, each once per connection."""
    sub = hub.subscribe(account_id=account_id, partner_id=partner_id)
    last = after
    try:
        while True:
            # Catch up from the database: everything numbered so far after ``last``.
            sub.lagging = False
            while True:
                async with UnitOfWork(engine) as uow:
                    rows = await uow.events.read(
                        after=last,
                        limit=CATCH_UP_PAGE,
                        account_id=account_id,
                        partner_id=partner_id,
                    )
                for row in rows:
                    yield SequencedEvent(row.sequence, decode_event(orjson.loads(row.payload)))
                    last = row.sequence
                if len(rows) < CATCH_UP_PAGE:
                    break
            # Live: what the hub hands over; anything already sent is skipped.
            while not sub.lagging:
                item = await sub.queue.get()
                if item is not None and item.sequence > last:
                    yield item
                    last = item.sequence
            while not sub.queue.empty():  # drop what the database re-read will deliver
                sub.queue.get_nowait()
    finally:
        hub.unsubscribe(sub)


@dataclass(frozen=True, slots=True)
class WatchAccount:
    caller: UserPrincipal
    account_id: UUID
    after_sequence: int


@dataclass(frozen=True, slots=True)
class WatchPartnerEvents:
    caller: PartnerPrincipal
    after_sequence: int


async def watch_account(
    cmd: WatchAccount, uow: UnitOfWork, hub: EventHub
) -> AsyncGenerator[SequencedEvent, None]:
    """The events of one of the caller's accounts: stored ones after the cursor, then live."""
    with hub.stream_of(cmd.caller.key):
        async with uow:
            note_resources(cmd.account_id)
            await load_own_account(uow, cmd.caller, cmd.account_id)
            await uow.commit()  # the audit row records the stream's opening
        events = stream_events(uow.engine, hub, after=cmd.after_sequence, account_id=cmd.account_id)
        async with contextlib.aclosing(events) as items:
            async for item in items:
                yield item


@dataclass(frozen=True, slots=True)
class PartnerEvent:
    """An event on a partner's stream; withdrawals routed to it carry where to pay."""

    item: SequencedEvent
    payout_destination: PayoutDestination | None = None


async def watch_partner_events(
    cmd: WatchPartnerEvents, uow: UnitOfWork, hub: EventHub, secrets: SecretBox
) -> AsyncGenerator[PartnerEvent, None]:
    """The events that concern the calling partner, stored then live."""
    with hub.stream_of(cmd.caller.key):
        async with uow:
            await uow.commit()
        partner_id = cmd.caller.partner_id
        events = stream_events(uow.engine, hub, after=cmd.after_sequence, partner_id=partner_id)
        async with contextlib.aclosing(events) as items:
            async for item in items:
                tx = item.event.transaction
                destination = None
                if tx is not None and tx.kind is TransactionKind.WITHDRAWAL:
                    async with UnitOfWork(uow.engine) as lookup:
                        destination = await payout_destination(
                            lookup, secrets, tx.transaction_id, partner_id
                        )
                yield PartnerEvent(item, destination)
