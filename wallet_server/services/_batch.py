"""Use cases: batch transfers (PartnerService.CreateTransfers), the high-throughput path.

A partner pays up to 1000 users in one call, from its own settlement accounts (the proto
contract: any other source is NOT_FOUND) to user accounts (any other destination is
NOT_FOUND, as for a deposit). The whole batch takes a fixed number of statements whatever
its size, on the driver connection with binary parameters: one reads the items' stored
idempotency records and locks the accounts of the items not seen before (sorted, so
concurrent batches and single transfers cannot deadlock); each item is then decided in order
in memory against the running balances; one more writes every posted transaction with its
legs and balance changes, started before the documents are serialized, and a last one
stores the items' keys with their outcomes, the batch's own response and the events.

Idempotency works at two levels, both scoped to the partner: the batch's ``request_id``
replays the whole response; each item's ``request_id`` replays that item's original outcome
(success or business refusal) in any later batch. An atomic batch that fails applies
nothing and stores no item key, so its items can be sent again. An item key that a
concurrent call stores while the batch runs makes the whole batch run again, and that item
then replays the other call's outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from wallet_server.domain import (
    Account,
    AccountKind,
    EventType,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    Money,
    NotFound,
    PartnerPrincipal,
    Reason,
    Transaction,
    TransactionKind,
    TransactionStatus,
    WalletError,
    id_text,
    plan_transfer,
    transaction_event,
)
from wallet_server.services._accounts import account_not_found
from wallet_server.services._call import note_resources
from wallet_server.services._codec import decode_as, embedded, encode, to_json
from wallet_server.services._events import event_row
from wallet_server.services._idempotency import (
    REMEMBERED_ERRORS,
    key_reused,
    refusal_response,
    replay,
    stored_refusal,
    success_response,
)
from wallet_server.services._retry import retry_on_conflict
from wallet_server.services._unit_of_work import UnitOfWork
from wallet_server.storage.repositories import BatchWrites, StoredResponse

MAX_BATCH_TRANSFERS = 1000
_METHOD = "CreateTransfers"
_ITEM_METHOD = "CreateTransfers/item"  # item keys share the partner's key space


@dataclass(frozen=True, slots=True)
class BatchTransfer:
    """One item. ``invalid`` says why transport could not parse it (the item then fails
    with INVALID_ARGUMENT on its own); the other fields are then possibly None."""

    request_id: UUID
    from_account_id: UUID | None
    to_account_id: UUID | None
    amount: Money | None
    memo: str
    invalid: str = ""


@dataclass(frozen=True, slots=True)
class CreateTransfers:
    caller: PartnerPrincipal
    request_id: UUID
    transfers: tuple[BatchTransfer, ...]
    atomic: bool


@dataclass(frozen=True, slots=True)
class BatchItemError:
    """Why an item failed: the ErrorInfo reason and gRPC code a single call would get."""

    reason: str
    message: str
    code: str


@dataclass(frozen=True, slots=True)
class BatchItemResult:
    """Exactly one of ``transaction`` and ``error`` is set."""

    request_id: UUID
    transaction: Transaction | None = None
    error: BatchItemError | None = None


@dataclass(frozen=True, slots=True)
class BatchResult:
    results: tuple[BatchItemResult, ...]  # one per item, in request order


def check_batch_size(count: int) -> None:
    """Call-level INVALID_ARGUMENT: no items, or too many."""
    if count == 0:
        raise InvalidArgument.for_field("transfers", "at least one transfer is required")
    if count > MAX_BATCH_TRANSFERS:
        raise InvalidArgument.for_field(
            "transfers", f"at most {MAX_BATCH_TRANSFERS} transfers per call"
        )


def check_batch_shape(request_id: UUID, transfers: tuple[BatchTransfer, ...]) -> None:
    """Call-level INVALID_ARGUMENT: no items, too many, or a request_id used twice (or equal
    to the batch's own)."""
    check_batch_size(len(transfers))
    violations: list[FieldViolation] = []
    first_use: dict[UUID, int] = {}
    for index, item in enumerate(transfers):
        field = f"transfers[{index}].request_id"
        if item.request_id == request_id:
            violations.append(FieldViolation(field, "must differ from the batch's request_id"))
        elif item.request_id in first_use:
            violations.append(
                FieldViolation(field, f"same as transfers[{first_use[item.request_id]}].request_id")
            )
        else:
            first_use[item.request_id] = index
    if violations:
        raise InvalidArgument(
            "; ".join(f"{v.field}: {v.description}" for v in violations),
            violations=tuple(violations),
        )


def _error(exc: WalletError) -> BatchItemError:
    return BatchItemError(reason=exc.reason, message=exc.message, code=exc.status_name)


_ABORTED = BatchItemError(
    reason=Reason.ABORTED,
    message="not applied: another item of this atomic batch failed",
    code="ABORTED",
)

Outcome = Transaction | BatchItemError


def _replayed(prior: StoredResponse, digest: bytes) -> Outcome:
    """The original outcome of an item whose key was used before."""
    if prior.fingerprint != digest:
        return BatchItemError(
            reason=Reason.IDEMPOTENCY_KEY_REUSED,
            message="request_id was already used with a different request",
            code="FAILED_PRECONDITION",
        )
    return _outcome(prior.response)


def _outcome(response: Any) -> Outcome:
    """An item's outcome from its stored response (a single call's format)."""
    if response is None:  # keys and responses commit together: never seen committed
        raise RuntimeError("idempotency record without a response")
    if "error" in response:
        error = response["error"]
        return BatchItemError(
            reason=error["reason"], message=error["message"], code=error["status"]
        )
    return decode_as(Transaction, response["result"])


def _item_result(request_id: UUID, outcome: Outcome) -> BatchItemResult:
    if isinstance(outcome, Transaction):
        return BatchItemResult(request_id, transaction=outcome)
    return BatchItemResult(request_id, error=outcome)


def _stored_batch(result: BatchResult, stored_now: dict[UUID, Outcome]) -> str:
    """The batch's own record: per item, in order, ``{"request_id": ...}`` when the outcome
    is stored under the item's key in the same transaction, else the item's whole result.

    A 1000-item batch's full response is most of a megabyte, a copy of what its items' keys
    hold; written as one value it cost about a tenth of the batch.
    """
    return to_json(
        {
            "batch": [
                {"request_id": r.request_id} if r.request_id in stored_now else r
                for r in result.results
            ]
        }
    )


async def _replayed_batch(
    response: Any, principal: str, batch_request_id: UUID, uow: UnitOfWork
) -> BatchResult:
    """The batch's original result from its record; raises the refusal it stored."""
    if "batch" not in response:  # a refusal, or a result stored whole by earlier versions
        replayed = replay(response, BatchResult)
        if isinstance(replayed, WalletError):
            raise replayed
        return replayed
    entries = response["batch"]
    # Entries holding only a request_id point to the item's own key, stored with the batch.
    referenced = {n: UUID(e["request_id"]) for n, e in enumerate(entries) if len(e) == 1}
    store = await uow.batches()
    stored = await store.stored_with_batch(
        principal=principal,
        batch_request_id=batch_request_id,
        request_ids=list(referenced.values()),
    )
    return BatchResult(
        tuple(
            _item_result(referenced[n], _outcome(stored[referenced[n]].response))
            if n in referenced
            else decode_as(BatchItemResult, entry)
            for n, entry in enumerate(entries)
        )
    )


def _digests(cmd: CreateTransfers) -> tuple[bytes, dict[UUID, bytes]]:
    """The batch's fingerprint and each parsed item's, as :func:`fingerprint` makes them
    (the same bytes), spelling each item's canonical JSON once for both."""
    items: dict[UUID, bytes] = {}
    spelled: list[str] = []
    for item in cmd.transfers:
        without_key, with_key = _canonical_item(item)
        spelled.append(with_key)
        if not item.invalid:
            canonical = f'["{_ITEM_METHOD}",{without_key}]'
            items[item.request_id] = hashlib.sha256(canonical.encode()).digest()
    rest = {
        f.name: encode(getattr(cmd, f.name))
        for f in dataclasses.fields(cmd)
        if f.name not in {"request_id", "caller", "transfers"}
    }
    rest["transfers"] = _SPLICE
    head, tail = json.dumps([_METHOD, rest], sort_keys=True, separators=(",", ":")).split(_SPLICED)
    canonical = f"{head}[{','.join(spelled)}]{tail}"
    return hashlib.sha256(canonical.encode()).digest(), items


# Where the items' canonical texts go in the batch's (a text no field can spell: the rest of
# the command has no free text).
_SPLICE = "\x00items\x00"
_SPLICED = json.dumps(_SPLICE)
_json_text = json.JSONEncoder(separators=(",", ":")).encode  # as json.dumps escapes


def _id_json(value: UUID | None) -> str:
    return "null" if value is None else f'"{id_text(value)}"'


def _canonical_item(item: BatchTransfer) -> tuple[str, str]:
    """The item's fields as :func:`fingerprint_of` spells them (keys sorted, no spaces),
    without and with its request_id. ``test_batch.py`` checks the bytes against it."""
    amount = (
        "null"
        if item.amount is None
        else f'{{"amount_minor":{int(item.amount.amount_minor)},'
        f'"currency":{_json_text(item.amount.currency)}}}'
    )
    head = (
        f'{{"amount":{amount},"from_account_id":{_id_json(item.from_account_id)},'
        f'"invalid":{_json_text(item.invalid)},"memo":{_json_text(item.memo)},'
    )
    tail = f'"to_account_id":{_id_json(item.to_account_id)}}}'
    return head + tail, f'{head}"request_id":"{id_text(item.request_id)}",{tail}'


def _decide(
    item: BatchTransfer,
    running: dict[UUID, Account],
    *,
    caller: PartnerPrincipal,
    transaction_id: UUID,
    now: datetime,
) -> tuple[Transaction, dict[UUID, Account]]:
    """Plan one item against the running balances and apply it to them.

    Returns the transaction and the accounts it changed, as they are right after it.
    Raises the business error that refuses it (nothing applied then).
    """
    assert item.from_account_id is not None
    assert item.to_account_id is not None
    assert item.amount is not None
    source = running.get(item.from_account_id)
    if (
        source is None
        or source.kind is not AccountKind.SETTLEMENT
        or source.partner_id != caller.partner_id
    ):
        raise account_not_found(item.from_account_id)
    destination = running.get(item.to_account_id)
    if destination is None or destination.kind is not AccountKind.USER:
        raise account_not_found(item.to_account_id)
    legs = plan_transfer(source, destination, item.amount)
    changed: dict[UUID, Account] = {}
    for leg in legs:
        changed[leg.account_id] = running[leg.account_id] = running[leg.account_id].after_posting(
            leg.amount
        )
    tx = Transaction(
        transaction_id=transaction_id,
        kind=TransactionKind.TRANSFER,
        status=TransactionStatus.POSTED,
        amount=item.amount,
        from_account_id=item.from_account_id,
        to_account_id=item.to_account_id,
        memo=item.memo,
        external_reference="",
        created_at=now,
        posted_at=now,
        postings=legs,
        partner_id=caller.partner_id,
    )
    return tx, changed


async def _execute(
    cmd: CreateTransfers, uow: UnitOfWork, digests: dict[UUID, bytes]
) -> BatchResult:
    """Decide and write the batch, with its own stored response; ``digests`` are the parsed
    items' fingerprints."""
    principal = cmd.caller.key
    items = cmd.transfers
    store = await uow.batches()
    async with contextlib.AsyncExitStack() as stack:
        # An atomic batch that fails must leave no trace but its own (batch-level) record.
        savepoint = await stack.enter_async_context(uow.savepoint()) if cmd.atomic else None
        reads = await store.read_and_lock(
            principal=principal,
            keys={
                i.request_id: (i.from_account_id, i.to_account_id) for i in items if not i.invalid
            },
        )
        prior = reads.stored
        outcomes: list[Outcome | None] = []
        fresh: list[int] = []  # items decided now (their keys are stored with the outcome)
        for index, item in enumerate(items):
            if item.invalid:
                outcomes.append(
                    BatchItemError(Reason.INVALID_ARGUMENT, item.invalid, "INVALID_ARGUMENT")
                )
            elif item.request_id in prior:
                outcomes.append(_replayed(prior[item.request_id], digests[item.request_id]))
            else:
                outcomes.append(None)
                fresh.append(index)

        running = dict(reads.accounts)  # those of the fresh items, locked by the read
        now = uow.now()
        posted: list[tuple[Transaction, dict[UUID, Account]]] = []
        decided: dict[UUID, Outcome] = {}
        for index in fresh:
            try:
                tx, changed = _decide(
                    items[index],
                    running,
                    caller=cmd.caller,
                    transaction_id=uow.new_id(),
                    now=now,
                )
            except (FailedPrecondition, NotFound) as exc:
                outcomes[index] = decided[items[index].request_id] = _error(exc)
            else:
                outcomes[index] = decided[items[index].request_id] = tx
                posted.append((tx, changed))

        failed = any(isinstance(o, BatchItemError) for o in outcomes)
        if savepoint is not None and failed:
            await savepoint.rollback()
            # Items decided now were not applied. An item replayed from an earlier call keeps
            # its original outcome: if it succeeded then, its money did move.
            fresh_set = set(fresh)
            outcomes = [
                _ABORTED if i in fresh_set and isinstance(o, Transaction) else o
                for i, o in enumerate(outcomes)
            ]
            posted, decided = [], {}
    results = []
    for item, outcome in zip(items, outcomes, strict=True):
        assert outcome is not None
        results.append(_item_result(item.request_id, outcome))
    result = BatchResult(tuple(results))

    # The ledger rows need no JSON: the database writes them while this process serializes
    # the documents (stored responses, events).
    await store.record_and_write(
        initiator=principal,
        transactions=[tx for tx, _ in posted],
        documents=functools.partial(_documents, cmd, result, posted, decided, digests),
    )
    return result


# Items serialized between two looks at the event loop: a 1000-item batch's documents take
# over ten milliseconds, in which the process's other calls keep being served.
_ITEMS_PER_TURN = 100


async def _documents(
    cmd: CreateTransfers,
    result: BatchResult,
    posted: list[tuple[Transaction, dict[UUID, Account]]],
    decided: dict[UUID, Outcome],
    digests: dict[UUID, bytes],
) -> BatchWrites:
    """The stored responses (each decided item's, with its key, and the batch's) and the
    events, as JSON text in the formats single calls store."""
    writes = BatchWrites(initiator=cmd.caller.key, method=_ITEM_METHOD)
    serialized: dict[UUID, Any] = {}  # each transaction once, for its response and event
    for count, (tx, changed) in enumerate(posted, 1):
        serialized[tx.transaction_id] = text = embedded(tx)
        event = transaction_event(EventType.TRANSACTION_CREATED, tx, changed)
        writes.events.append(event_row(event, transaction=text))
        if count % _ITEMS_PER_TURN == 0:
            await asyncio.sleep(0)
    for request_id, outcome in decided.items():
        writes.item_keys[request_id] = (
            digests[request_id],
            success_response(serialized[outcome.transaction_id])
            if isinstance(outcome, Transaction)
            else stored_refusal(outcome.code, outcome.reason, outcome.message),
        )
    writes.responses[cmd.request_id] = _stored_batch(result, decided)
    return writes


@retry_on_conflict
async def create_transfers(cmd: CreateTransfers, uow: UnitOfWork) -> BatchResult:
    """Execute a partner's batch: per-item results in request order; see the module doc.

    Exactly once per batch key, as :func:`run_once` does it, but the batch writes its own
    record along with its items' keys, and that record points to the outcomes they hold
    rather than copying them (:func:`_stored_batch`).
    """
    check_batch_shape(cmd.request_id, cmd.transfers)
    principal = cmd.caller.key
    digest, item_digests = _digests(cmd)
    async with uow:
        prior = await uow.idempotency.claim(
            principal=principal, request_id=cmd.request_id, method=_METHOD, fingerprint=digest
        )
        if prior is not None:
            if prior.fingerprint != digest:
                raise key_reused()
            result = await _replayed_batch(prior.response, principal, cmd.request_id, uow)
        else:
            try:
                async with uow.savepoint():
                    result = await _execute(cmd, uow, item_digests)
            except REMEMBERED_ERRORS as exc:
                uow.idempotency.store_response(
                    principal=principal, request_id=cmd.request_id, response=refusal_response(exc)
                )
                await uow.commit(code=exc.status_name)
                raise
        note_resources(
            *dict.fromkeys(
                id_text(touched)
                for r in result.results
                if (tx := r.transaction) is not None
                for touched in (tx.from_account_id, tx.to_account_id, tx.transaction_id)
            )
        )
        await uow.commit()
        return result


__all__ = [
    "MAX_BATCH_TRANSFERS",
    "BatchItemError",
    "BatchItemResult",
    "BatchResult",
    "BatchTransfer",
    "CreateTransfers",
    "check_batch_shape",
    "check_batch_size",
    "create_transfers",
]
