"""Set-based reads and writes for a partner's batch of transfers (CreateTransfers).

Works on the raw psycopg connection with binary parameters, like the movement groups: one
statement reads the items' idempotency keys and locks the accounts of the items not seen
before, one writes the posted transactions with their legs and balance changes, and one
stores the items' keys with their responses, the batch's response and the events. The last
two go out in one pipeline: responses and event payloads arrive as JSON text, which the
caller serializes while the database writes the transactions.

Item keys are stored once, with their responses, when the batch is decided, not claimed
first and answered later: a key is one insert instead of an insert and an update (and
leaves no dead row). A key that a concurrent transaction stores in between makes the
write raise :class:`KeysChangedMeanwhile`; the batch then runs again and replays that key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from wallet_server.domain import Account, Transaction
from wallet_server.storage._arrays import bytea_array, text_array, uuid_array
from wallet_server.storage._errors import KeysChangedMeanwhile
from wallet_server.storage.repositories._bulk import (
    APPEND_EVENTS,
    RECORD_POSTED,
    STORE_RESPONSES,
    WANTED_ACCOUNT_ROWS,
    EventText,
    account_from_row,
    event_params,
    in_id_order,
    lock_wanted_accounts,
    record_params,
    response_params,
    with_statement,
)
from wallet_server.storage.repositories._idempotency import StoredResponse, stored_response

# In one statement: the stored record of every item key already taken, and the accounts of
# the other items, user accounts locked in id order like every other writer, system
# accounts read (their changes go to balance_deltas). Nothing here waits for a key: a key
# stored concurrently is found when the batch stores its own (see ``_STORE_ITEM_KEYS``).
# Rows are tagged: 's' stored, 'a' account.
# Stored keys are found by joining on the input's principal column (``input`` is used more
# than once, so it is materialized and the planner does not see the constant in it), not on
# the principal as a constant: statistics taken while the partner had few keys estimate a
# handful of rows for it, and the planner then read every key the partner kept (a day's
# worth), per batch. (The key array as an extra condition of that lookup was no better:
# inside a nested loop it is sorted again for every key, a million comparisons for 1000.)
_READ_AND_LOCK = f"""
    WITH input AS (
        SELECT %(principal)b::text AS principal, k.request_id, k.from_account_id,
            k.to_account_id
        FROM unnest(%(request_ids)b::uuid[], %(from_account_ids)b::uuid[],
            %(to_account_ids)b::uuid[]) AS k(request_id, from_account_id, to_account_id)
    ),
    stored AS (
        SELECT k.request_id, k.method, k.fingerprint, k.response
        FROM idempotency_keys AS k
        JOIN input ON input.principal = k.principal AND input.request_id = k.request_id
    ),
    fresh AS (
        SELECT input.from_account_id, input.to_account_id
        FROM input LEFT JOIN stored ON stored.request_id = input.request_id
        WHERE stored.request_id IS NULL
    ),
    wanted AS (
        SELECT from_account_id AS account_id FROM fresh
        UNION
        SELECT to_account_id FROM fresh
    ),
    {lock_wanted_accounts()}
    SELECT 's', s.request_id, s.method, s.fingerprint, s.response,
        NULL::uuid, NULL::text, NULL::text, NULL::uuid, NULL::uuid, NULL::bigint,
        NULL::bigint, NULL::boolean, NULL::timestamptz
    FROM stored AS s
    {WANTED_ACCOUNT_ROWS}
"""

# The keys of the items decided now, with their responses, inserted in request_id order (so
# concurrent writers wait on each other's keys in one order). A key a concurrent
# transaction holds makes the insert wait for its end; a key it committed is skipped, and
# the count then falls short.
_STORE_ITEM_KEYS = """
    item_keys AS (
        INSERT INTO idempotency_keys (principal, request_id, method, fingerprint, response)
        SELECT %(key_principal)b::text, i.request_id, %(key_method)b::text, i.fingerprint,
            i.response
        FROM unnest(%(key_request_ids)b::uuid[], %(key_fingerprints)b::bytea[],
            %(key_responses)b::text[]) AS i(request_id, fingerprint, response)
        ORDER BY i.request_id
        ON CONFLICT DO NOTHING
        RETURNING 1
    )"""


# Item keys stored in the same transaction as the batch's own key (by the (principal,
# request_id) pairs, as every key lookup; the batch's key by its primary key).
_STORED_WITH_BATCH = """
    SELECT k.request_id, k.method, k.fingerprint, k.response
    FROM idempotency_keys AS k
    JOIN unnest(%(principals)b::text[], %(request_ids)b::uuid[]) AS i(principal, request_id)
        ON i.principal = k.principal AND i.request_id = k.request_id
    JOIN idempotency_keys AS b
        ON b.principal = %(principal)b::text AND b.request_id = %(batch_request_id)b::uuid
        AND b.created_at = k.created_at
"""


@dataclass(frozen=True, slots=True)
class BatchReads:
    """Earlier outcomes of the keys already taken, and the accounts of the other items:
    user accounts locked, system accounts read."""

    stored: dict[UUID, StoredResponse]
    accounts: dict[UUID, Account]


@dataclass(slots=True)
class BatchWrites:
    """The documents a decided batch writes besides its transactions, as JSON text: the
    keys of the items decided now (request_id -> fingerprint and response, stored under
    ``method``), responses of keys claimed earlier in the transaction (the batch's own),
    and events in decision order. All keys are the initiator's."""

    initiator: str
    method: str
    item_keys: dict[UUID, tuple[bytes, str]] = field(default_factory=dict)
    responses: dict[UUID, str] = field(default_factory=dict)
    events: list[EventText] = field(default_factory=list)


class BatchRepository:
    """Reads and writes of a batch; ``conn`` is the unit of work's psycopg connection, inside
    its transaction."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def read_and_lock(
        self, *, principal: str, keys: dict[UUID, tuple[UUID | None, UUID | None]]
    ) -> BatchReads:
        """The stored records of ``keys`` (request_id -> source, destination) already taken,
        and the accounts of the other items, locked as the module says."""
        ordered = in_id_order(keys)
        cur = await self._conn.execute(
            _READ_AND_LOCK,
            {
                "principal": principal,
                "request_ids": uuid_array(ordered),
                "from_account_ids": uuid_array([keys[k][0] for k in ordered]),
                "to_account_ids": uuid_array([keys[k][1] for k in ordered]),
            },
        )
        stored: dict[UUID, StoredResponse] = {}
        accounts: dict[UUID, Account] = {}
        for row in await cur.fetchall():
            if row[0] == "a":
                accounts[row[5]] = account_from_row(row[5:])
            else:
                stored[row[1]] = stored_response(row[2], row[3], row[4])
        return BatchReads(stored=stored, accounts=accounts)

    async def stored_with_batch(
        self, *, principal: str, batch_request_id: UUID, request_ids: Sequence[UUID]
    ) -> dict[UUID, StoredResponse]:
        """The records of item keys that the batch ``batch_request_id`` stored with its own.

        Keys stored in one transaction share their ``created_at`` (the transaction's start)
        and are purged together, by one statement. A key missing here, or stored again by a
        later call, means the batch's own key was purged since the caller read it:
        :class:`KeysChangedMeanwhile` says so (run again, the call finds that key gone).
        """
        if not request_ids:
            return {}
        cur = await self._conn.execute(
            _STORED_WITH_BATCH,
            {
                "principal": principal,
                "batch_request_id": batch_request_id,
                "principals": text_array([principal] * len(request_ids)),
                "request_ids": uuid_array(request_ids),
            },
        )
        stored = {
            request_id: stored_response(method, fingerprint, response)
            for request_id, method, fingerprint, response in await cur.fetchall()
        }
        if len(stored) != len(set(request_ids)):
            raise KeysChangedMeanwhile("item keys purged since their batch's key was read")
        return stored

    async def record_and_write(
        self,
        *,
        initiator: str,
        transactions: Sequence[Transaction],
        documents: Callable[[], Awaitable[BatchWrites]],
    ) -> None:
        """Write the posted transactions with their legs and balance changes, then the
        documents once ``documents()`` has made them: keys, responses, events (the caller
        then commits).

        Both statements go out in one pipeline: the database writes the transactions while
        the caller serializes the documents, and starts on those as soon as they arrive,
        with no round trip in between. Errors of either statement are raised here, after
        the pipeline is drained; one raised by ``documents`` wins over them. Raises
        :class:`KeysChangedMeanwhile` when a concurrent transaction stored one of the item
        keys after :meth:`read_and_lock` read them: the transaction must roll back.
        """
        # Nothing raises inside the pipeline block: a failure of ``documents`` (a cancellation
        # included) is held until the pipeline is drained, so that a statement error met
        # while draining is not logged by psycopg as one it ignored.
        held: BaseException | None = None
        cur = None
        try:
            async with self._conn.pipeline():
                if transactions:
                    await self._conn.execute(
                        with_statement(RECORD_POSTED),
                        record_params([(tx, initiator) for tx in transactions]),
                    )
                try:
                    writes = await documents()
                except BaseException as exc:  # raised below, once drained
                    held = exc
                else:
                    statement = _write_statement(writes)
                    cur = await self._conn.execute(*statement) if statement else None
        except Exception:
            if held is None:
                raise
        if held is not None:
            raise held
        if cur is None:
            return
        row = await cur.fetchone()
        if row[0] != len(writes.item_keys):
            raise KeysChangedMeanwhile(
                f"{len(writes.item_keys) - row[0]} item keys stored meanwhile"
            )


def _write_statement(writes: BatchWrites) -> tuple[str, dict[str, Any]] | None:
    """One statement for the keys, the responses and the events, which returns how many
    item keys it stored."""
    parts: list[str] = []
    params: dict[str, Any] = {}
    if writes.item_keys:
        parts.append(_STORE_ITEM_KEYS)
        ordered = in_id_order(writes.item_keys)
        params.update(
            key_principal=writes.initiator,
            key_method=writes.method,
            key_request_ids=uuid_array(ordered),
            key_fingerprints=bytea_array([writes.item_keys[k][0] for k in ordered]),
            key_responses=text_array([writes.item_keys[k][1] for k in ordered]),
        )
    if writes.responses:
        parts.append(STORE_RESPONSES)
        params.update(
            response_params({(writes.initiator, k): v for k, v in writes.responses.items()})
        )
    if writes.events:
        parts.append(APPEND_EVENTS)
        params.update(event_params(writes.events))
    if not parts:
        return None
    # Data-modifying CTEs all run to completion, referenced or not.
    select = "(SELECT count(*) FROM item_keys)" if writes.item_keys else "0"
    return with_statement(*parts, select=select), params
