"""Group commit for money movements: concurrent ``Transfer`` and ``Deposit`` calls share one
database transaction.

Calls that arrive while a group is being written queue up and form the next group, so under
load a group holds many transfers and at rest just one (no added wait). Each transfer is
decided on its own, in arrival order, against balances that include the transfers decided
before it, and every caller is answered only after the group's commit. The group's reads
are one round trip and its writes another, whatever its size.

A group that fails as a whole for any reason other than a transient conflict (retried as a
group) or an unreachable database is not retried as a group: each of its calls then runs
alone through :func:`transfer` or :func:`deposit`, so one bad request cannot fail the others.

Grouping is also what keeps a hot account from serializing the system: a partner's
settlement account is locked once per group of deposits, not once per deposit.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

from wallet_server.domain import (
    Account,
    AccountKind,
    EventType,
    NotFound,
    Transaction,
    TransactionKind,
    WalletError,
    id_text,
    normalize_username,
    transaction_event,
)
from wallet_server.services._accounts import account_not_found
from wallet_server.services._call import CallRecord, current_call
from wallet_server.services._commands import Deposit, Transfer
from wallet_server.services._events import event_row
from wallet_server.services._idempotency import (
    REMEMBERED_ERRORS,
    fingerprint,
    key_reused,
    refusal_response,
    replay,
    success_response,
)
from wallet_server.services._movements import decide_movement, deposit, transfer
from wallet_server.services._retry import retry_on_conflict
from wallet_server.services._unit_of_work import UnitOfWork
from wallet_server.storage.repositories import GroupReads, GroupWrites, IdempotencyKey

__all__ = ["GroupedMovement", "MovementGroups", "movement_group"]

_log = logging.getLogger(__name__)

MAX_GROUP = 512  # bounds one statement's arrays and one transaction's lock set
# Groups written at once per process. One: calls that arrive while a group is written wait
# and form a bigger next group, so the per-group cost (two statements, a commit, the Python
# around them) is shared by more calls. On a CPU-bound server that beat two in flight by
# about a quarter at 16 concurrent transfers; two or more make smaller groups.
MAX_IN_FLIGHT = 1

Outcome = Transaction | WalletError


@dataclass(frozen=True, slots=True)
class GroupedMovement:
    command: Transfer | Deposit
    call: CallRecord | None  # the call to audit in the group's transaction
    settlement_id: UUID | None = None  # a deposit's source: the partner's settlement account

    @property
    def method(self) -> str:
        return "Transfer" if isinstance(self.command, Transfer) else "Deposit"


@dataclass(frozen=True, slots=True)
class Decided:
    """A grouped transfer's outcome and the resources its audit row names."""

    outcome: Outcome
    resources: tuple[str, ...]


def _key(cmd: Transfer | Deposit) -> IdempotencyKey:
    return (cmd.caller.key, cmd.request_id)


def _account_ids(grouped: GroupedMovement) -> tuple[UUID | None, ...]:
    cmd = grouped.command
    if isinstance(cmd, Transfer):
        return (cmd.from_account_id, cmd.to_account_id)
    return (grouped.settlement_id, cmd.account_id)


@retry_on_conflict
async def movement_group(group: Sequence[GroupedMovement], uow: UnitOfWork) -> list[Decided]:
    """Decide and commit a group of movements with distinct idempotency keys, in order."""
    keys = {_key(g.command): (g.method, fingerprint(g.method, g.command)) for g in group}
    if len(keys) != len(group):
        raise ValueError("a movement group must not hold one idempotency key twice")
    async with uow:
        store = await uow.movement_groups()
        reads = await store.claim_and_lock(
            keys=keys,
            account_ids=[a for g in group for a in _account_ids(g) if a is not None],
            names=[
                (normalize_username(g.command.to_username), g.command.amount.currency)
                for g in group
                if isinstance(g.command, Transfer) and g.command.to_username is not None
            ],
        )
        decider = _Decider(reads, keys, uow)
        decided = [decider.decide(g) for g in group]
        store.write(decider.writes)
        await uow.commit()
    return decided


class _Decider:
    """Decides grouped transfers one by one against running balances; collects the writes."""

    def __init__(
        self,
        reads: GroupReads,
        fingerprints: dict[IdempotencyKey, tuple[str, bytes]],
        uow: UnitOfWork,
    ) -> None:
        self._reads = reads
        self._fingerprints = fingerprints
        self._accounts: dict[UUID, Account] = dict(reads.accounts)
        self._uow = uow
        self.writes = GroupWrites()

    def decide(self, grouped: GroupedMovement) -> Decided:
        cmd = grouped.command
        if isinstance(cmd, Transfer):
            resources = [id_text(cmd.from_account_id)]
            if cmd.to_account_id is not None:
                resources.append(id_text(cmd.to_account_id))
        else:
            resources = [id_text(cmd.account_id)]
        outcome = self._outcome(grouped)
        if isinstance(outcome, Transaction):
            resources += [id_text(outcome.to_account_id), id_text(outcome.transaction_id)]
        code = outcome.status_name if isinstance(outcome, WalletError) else "OK"
        if grouped.call is not None:
            self.writes.audit.append(grouped.call.entry(code, more_resources=resources))
        return Decided(outcome, tuple(resources))

    def _outcome(self, grouped: GroupedMovement) -> Outcome:
        cmd = grouped.command
        key = _key(cmd)
        prior = self._reads.stored.get(key)
        if prior is not None:
            if prior.fingerprint != self._fingerprints[key][1]:
                return key_reused()
            return replay(prior.response, Transaction)
        try:
            tx = self._transfer(cmd) if isinstance(cmd, Transfer) else self._deposit(grouped)
        except REMEMBERED_ERRORS as exc:
            self.writes.responses[key] = refusal_response(exc)
            return exc
        except WalletError as exc:  # bad input: not remembered, the key is free again
            self.writes.released.append(key)
            return exc
        self.writes.responses[key] = success_response(tx)
        return tx

    def _transfer(self, cmd: Transfer) -> Transaction:
        destination_id = self._destination_id(cmd)
        source = self._accounts.get(cmd.from_account_id)
        if source is None or source.owner_user_id != cmd.caller.user_id:
            raise account_not_found(cmd.from_account_id)
        return self._move(
            source,
            destination_id,
            cmd,
            kind=TransactionKind.TRANSFER,
            memo=cmd.memo,
            external_reference="",
            partner_id=None,
        )

    def _deposit(self, grouped: GroupedMovement) -> Transaction:
        cmd = grouped.command
        assert isinstance(cmd, Deposit)
        assert grouped.settlement_id is not None
        return self._move(
            self._accounts[grouped.settlement_id],
            cmd.account_id,
            cmd,
            kind=TransactionKind.DEPOSIT,
            memo="",
            external_reference=cmd.external_reference,
            partner_id=cmd.caller.partner_id,
        )

    def _move(
        self,
        source: Account,
        destination_id: UUID,
        cmd: Transfer | Deposit,
        *,
        kind: TransactionKind,
        memo: str,
        external_reference: str,
        partner_id: UUID | None,
    ) -> Transaction:
        tx = decide_movement(
            source,
            destination_id,
            self._accounts.get(destination_id),
            cmd,
            transaction_id=self._uow.new_id(),
            now=self._uow.now(),
            kind=kind,
            memo=memo,
            external_reference=external_reference,
            partner_id=partner_id,
        )
        changed: dict[UUID, Account] = {}
        for leg in tx.postings:
            changed[leg.account_id] = self._accounts[leg.account_id].after_posting(leg.amount)
        self._accounts.update(changed)
        self.writes.transactions.append((tx, cmd.caller.key))
        self.writes.events.append(
            event_row(transaction_event(EventType.TRANSACTION_CREATED, tx, changed))
        )
        return tx

    def _destination_id(self, cmd: Transfer) -> UUID:
        if cmd.to_account_id is not None:
            return cmd.to_account_id
        assert cmd.to_username is not None
        found = self._reads.named.get((normalize_username(cmd.to_username), cmd.amount.currency))
        if found is None:
            raise NotFound(f"no {cmd.amount.currency} account for user {cmd.to_username!r}")
        return found


class _GroupFailed(Exception):
    """The group could not be written; the call is run alone instead."""


@dataclass(slots=True)
class _Waiting:
    grouped: GroupedMovement
    answer: asyncio.Future[Decided]
    taken: bool = False  # in a group being written: its outcome will come


class MovementGroups:
    """Gathers concurrent movements into groups, written ``max_in_flight`` at a time."""

    def __init__(
        self,
        new_uow: Callable[[], UnitOfWork],
        *,
        max_group: int = MAX_GROUP,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._new_uow = new_uow
        self._max_group = max_group
        self._slots = asyncio.Semaphore(max_in_flight)
        self._queue: deque[_Waiting] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writers: set[asyncio.Task[None]] = set()
        self._settlements: dict[tuple[UUID, str], UUID] = {}
        self._closing = False

    def start(self) -> None:
        # A fresh context: the writer must not inherit the audit record of whichever call
        # happened to be running when the server started it.
        self._task = asyncio.create_task(self._run(), context=contextvars.Context())

    async def stop(self) -> None:
        """Finish the queued movements, then stop; later ones run alone."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def transfer(self, cmd: Transfer) -> Transaction:
        """Run ``cmd`` in the next group; answered after that group commits."""
        if not self._grouping:
            return await transfer(cmd, self._new_uow())
        try:
            return await self._in_group(GroupedMovement(cmd, current_call()))
        except _GroupFailed:
            return await transfer(cmd, self._new_uow())

    async def deposit(self, cmd: Deposit) -> Transaction:
        """Run ``cmd`` in the next group; answered after that group commits."""
        if not self._grouping:
            return await deposit(cmd, self._new_uow())
        settlement_id = await self._settlement_account(cmd.caller.partner_id, cmd.amount.currency)
        try:
            return await self._in_group(GroupedMovement(cmd, current_call(), settlement_id))
        except _GroupFailed:
            return await deposit(cmd, self._new_uow())

    @property
    def _grouping(self) -> bool:
        return self._task is not None and not self._task.done() and not self._closing

    async def _settlement_account(self, partner_id: UUID, currency: str) -> UUID:
        """The partner's settlement account in ``currency``, created on first use."""
        known = self._settlements.get((partner_id, currency))
        if known is not None:
            return known
        async with self._new_uow() as uow:
            account_id = await uow.ledger.ensure_system_account(
                account_id=uow.new_id(),
                kind=AccountKind.SETTLEMENT,
                currency=currency,
                partner_id=partner_id,
            )
            await uow.connection.commit()  # an empty account: not the call's effect
        self._settlements[(partner_id, currency)] = account_id
        return account_id

    async def _in_group(self, grouped: GroupedMovement) -> Transaction:
        if not self._grouping:  # stopped while this call was getting ready
            raise _GroupFailed
        waiting = _Waiting(grouped, asyncio.get_running_loop().create_future())
        self._queue.append(waiting)
        self._wake.set()
        try:
            decided = await asyncio.shield(waiting.answer)
        except asyncio.CancelledError:
            if not waiting.taken:
                waiting.answer.cancel()  # never written: the group leaves it out
                raise
            # Its group is being written: whatever it decides is this call's effect, and the
            # audit row the group writes is this call's row. Wait for it, then give up.
            with contextlib.suppress(BaseException):
                self._note_audited(grouped, await asyncio.shield(waiting.answer))
            raise
        self._note_audited(grouped, decided)
        if isinstance(decided.outcome, WalletError):
            raise decided.outcome
        return decided.outcome

    @staticmethod
    def _note_audited(grouped: GroupedMovement, decided: Decided) -> None:
        if grouped.call is not None:
            grouped.call.resource_ids.extend(decided.resources)
            grouped.call.audited = True

    async def _run(self) -> None:
        try:
            while self._queue or not self._closing:
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                # Wait for a free slot before taking: the queue keeps filling meanwhile.
                await self._slots.acquire()
                group = self._take()
                if not group:
                    self._slots.release()
                    continue
                writer = asyncio.create_task(self._write(group))
                self._writers.add(writer)
                writer.add_done_callback(self._writers.discard)
            await asyncio.gather(*self._writers)
        finally:
            self._closing = True  # from here on, movements run alone
            while self._queue:
                _answer_error(self._queue.popleft(), _GroupFailed())

    def _take(self) -> list[_Waiting]:
        """The next group, in arrival order: up to the size bound or a repeated key (which
        waits for the next group, so it replays the first one's outcome)."""
        group: list[_Waiting] = []
        keys: set[IdempotencyKey] = set()
        while self._queue and len(group) < self._max_group:
            waiting = self._queue[0]
            if waiting.answer.done():  # the caller gave up before its group formed
                self._queue.popleft()
                continue
            key = _key(waiting.grouped.command)
            if key in keys:
                break
            keys.add(key)
            waiting.taken = True
            group.append(self._queue.popleft())
        return group

    async def _write(self, group: list[_Waiting]) -> None:
        try:
            decided = await movement_group([w.grouped for w in group], self._new_uow())
        except WalletError as exc:  # e.g. the database is unavailable: the same for all
            for waiting in group:
                _answer_error(waiting, copy.copy(exc))  # each caller raises its own
        except Exception:
            _log.exception("movement group of %d failed; running its calls one by one", len(group))
            for waiting in group:
                _answer_error(waiting, _GroupFailed())
        except BaseException:  # cancelled: the calls run alone (a replay if it committed)
            for waiting in group:
                _answer_error(waiting, _GroupFailed())
            raise
        else:
            for waiting, outcome in zip(group, decided, strict=True):
                if not waiting.answer.done():
                    waiting.answer.set_result(outcome)
        finally:
            self._slots.release()


def _answer_error(waiting: _Waiting, exc: Exception) -> None:
    if not waiting.answer.done():
        waiting.answer.set_exception(exc)
