"""Set-based reads and writes for a group of transfers decided together (group commit).

Works on the raw psycopg connection: the reads of a whole group (claim the idempotency
keys, resolve usernames, lock every account) are one statement, and its writes (transactions
with their postings and balances, stored responses, events, audit rows) are another. A
group is any number of transfers; the cost per transfer falls as it grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from wallet_server.domain import Account, Transaction
from wallet_server.storage._arrays import (
    BinaryArray,
    bigint_array,
    bytea_array,
    text_array,
    timestamptz_array,
    uuid_array,
)
from wallet_server.storage._driver import WritesAtCommit
from wallet_server.storage.repositories._audit import NewAuditEntry
from wallet_server.storage.repositories._bulk import (
    APPEND_EVENTS,
    RECORD_POSTED,
    STORE_RESPONSES,
    WANTED_ACCOUNT_ROWS,
    EventText,
    account_from_row,
    event_params,
    in_id_order,
    in_key_order,
    lock_wanted_accounts,
    record_params,
    response_params,
    with_statement,
)
from wallet_server.storage.repositories._idempotency import StoredResponse, stored_response

IdempotencyKey = tuple[str, UUID]  # (principal, request_id)

# Everything a group needs to decide, in one statement and one round trip:
#  - claim every new idempotency key (inserted in sorted order, so concurrent groups wait on
#    each other's keys in one order) and report the stored record of every key already
#    taken (read from the snapshot before the insert, so never a key claimed here);
#  - resolve (username, currency) destinations to the user's first-opened account;
#  - lock every user account involved, in id order like every other writer, and read the
#    system accounts without a lock (their changes go to balance_deltas). The count over
#    ``claimed`` runs once before the first lock is taken: a group never waits for a key
#    while it holds account locks, so it cannot deadlock with a group that holds the key.
# Rows are tagged: 'c' claimed, 's' stored, 'n' named destination, 'a' locked account.
_CLAIM_AND_LOCK = f"""
    WITH input AS (
        SELECT k.principal, k.request_id, k.method, k.fingerprint
        FROM unnest(%(principals)b::text[], %(request_ids)b::uuid[], %(methods)b::text[],
            %(fingerprints)b::bytea[]) AS k(principal, request_id, method, fingerprint)
    ),
    claimed AS (
        INSERT INTO idempotency_keys (principal, request_id, method, fingerprint)
        SELECT input.principal, input.request_id, input.method, input.fingerprint
        FROM input ORDER BY input.principal, input.request_id
        ON CONFLICT DO NOTHING
        RETURNING principal, request_id
    ),
    named AS (
        SELECT DISTINCT ON (u.username, acc.currency)
            u.username, acc.currency, acc.account_id
        FROM unnest(%(usernames)b::text[], %(currencies)b::text[]) AS n(username, currency)
        JOIN users AS u ON u.username = n.username
        JOIN accounts AS acc ON acc.owner_user_id = u.user_id AND acc.currency = n.currency
        ORDER BY u.username, acc.currency, acc.created_at, acc.account_id
    ),
    wanted AS (
        SELECT unnest(%(account_ids)b::uuid[]) AS account_id
        UNION
        SELECT account_id FROM named
    ),
    {lock_wanted_accounts(after="claimed")}
    SELECT 'c', c.principal, c.request_id, NULL::bytea, NULL::text,
        NULL::uuid, NULL::text, NULL::text, NULL::uuid, NULL::uuid, NULL::bigint,
        NULL::bigint, NULL::boolean, NULL::timestamptz
    FROM claimed AS c
    UNION ALL
    SELECT 's', k.principal, k.request_id, k.fingerprint, k.response,
        NULL, NULL, k.method, NULL, NULL, NULL, NULL, NULL, NULL
    FROM idempotency_keys AS k
    JOIN input ON input.principal = k.principal AND input.request_id = k.request_id
    UNION ALL
    SELECT 'n', n.username, NULL, NULL, NULL,
        n.account_id, NULL, n.currency, NULL, NULL, NULL, NULL, NULL, NULL
    FROM named AS n
    {WANTED_ACCOUNT_ROWS}
"""

# Keys that a concurrent transaction committed after the claim statement's snapshot.
_READ_KEYS = """
    SELECT k.principal, k.request_id, k.method, k.fingerprint, k.response
    FROM idempotency_keys AS k
    JOIN unnest(%(principals)b::text[], %(request_ids)b::uuid[]) AS i(principal, request_id)
        ON i.principal = k.principal AND i.request_id = k.request_id
"""

# Claims of calls refused for bad input: such refusals are not remembered.
_RELEASE_KEYS = """
    released AS (
        DELETE FROM idempotency_keys AS k
        USING unnest(%(released_principals)b::text[], %(released_request_ids)b::uuid[])
            AS r(principal, request_id)
        WHERE k.principal = r.principal AND k.request_id = r.request_id
    )"""

_APPEND_AUDIT = """
    audit AS (
        INSERT INTO audit_log (call_id, occurred_at, principal, method, resource_ids, code,
            latency_us, peer, request_id)
        SELECT e.call_id, e.occurred_at, e.principal, e.method,
            CASE WHEN e.resources = '' THEN '{}'::text[]
                ELSE string_to_array(e.resources, ' ') END,
            e.code, e.latency_us, e.peer, e.request_id
        FROM unnest(%(audit_call_ids)b::uuid[], %(audit_times)b::timestamptz[],
            %(audit_principals)b::text[], %(audit_methods)b::text[],
            %(audit_resources)b::text[], %(audit_codes)b::text[],
            %(audit_latencies)b::bigint[], %(audit_peers)b::text[],
            %(audit_request_ids)b::text[])
            WITH ORDINALITY AS e(call_id, occurred_at, principal, method, resources, code,
                latency_us, peer, request_id, n)
        ORDER BY e.n
        ON CONFLICT (call_id) DO NOTHING
    )"""


@dataclass(frozen=True, slots=True)
class GroupReads:
    """What a group needs to decide: earlier outcomes, destinations by name, locked accounts."""

    stored: dict[IdempotencyKey, StoredResponse]  # keys used before; every other is claimed
    named: dict[tuple[str, str], UUID]  # (username, currency) -> account
    accounts: dict[UUID, Account]


# An outbox row: (type, partner_id, account_ids, payload), as EventRepository.append takes.
EventRow = EventText  # (type, partner_id, account_ids, payload as JSON text)


@dataclass(slots=True)
class GroupWrites:
    """Everything a decided group writes, in decision order."""

    transactions: list[tuple[Transaction, str]] = field(default_factory=list)  # (tx, initiator)
    responses: dict[IdempotencyKey, str] = field(default_factory=dict)  # JSON text
    released: list[IdempotencyKey] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    audit: list[NewAuditEntry] = field(default_factory=list)


class MovementGroupRepository:
    """Reads and writes for a group of transfers; ``conn`` is the unit of work's psycopg
    connection, inside its transaction. The group's write goes out with the commit
    (``at_commit``)."""

    def __init__(self, conn: Any, at_commit: WritesAtCommit) -> None:
        self._conn = conn
        self._at_commit = at_commit

    async def claim_and_lock(
        self,
        *,
        keys: dict[IdempotencyKey, tuple[str, bytes]],
        account_ids: Sequence[UUID],
        names: Sequence[tuple[str, str]],
    ) -> GroupReads:
        """Claim ``keys`` (key -> method and request fingerprint), resolve ``names``
        (username, currency) and lock every account involved, in one statement."""
        ordered = in_key_order(keys)
        cur = await self._conn.execute(
            _CLAIM_AND_LOCK,
            {
                "principals": text_array([p for p, _ in ordered]),
                "request_ids": uuid_array([r for _, r in ordered]),
                "methods": text_array([keys[k][0] for k in ordered]),
                "fingerprints": bytea_array([keys[k][1] for k in ordered]),
                "usernames": text_array([n for n, _ in names]),
                "currencies": text_array([c for _, c in names]),
                "account_ids": uuid_array(in_id_order(set(account_ids))),
            },
        )
        stored: dict[IdempotencyKey, StoredResponse] = {}
        named: dict[tuple[str, str], UUID] = {}
        accounts: dict[UUID, Account] = {}
        missing = set(keys)
        claimed: list[IdempotencyKey] = []
        for row in await cur.fetchall():
            tag = row[0]
            if tag == "a":
                accounts[row[5]] = account_from_row(row[5:])
            elif tag == "n":
                named[(row[1], row[7])] = row[5]
            else:
                missing.discard((row[1], row[2]))
                if tag == "c":
                    claimed.append((row[1], row[2]))
                else:
                    stored[(row[1], row[2])] = stored_response(row[7], row[3], row[4])
        # A key purged while the claim waited on it is claimed afresh, though the statement's
        # snapshot still shows the old record: the claim is what counts.
        for key in claimed:
            stored.pop(key, None)
        if missing:
            stored.update(await self._read_late(missing))
        return GroupReads(stored=stored, named=named, accounts=accounts)

    async def _read_late(self, keys: set[IdempotencyKey]) -> dict[IdempotencyKey, StoredResponse]:
        """Keys a concurrent transaction took and committed while the claim waited on it."""
        cur = await self._conn.execute(
            _READ_KEYS,
            {
                "principals": text_array([p for p, _ in keys]),
                "request_ids": uuid_array([r for _, r in keys]),
            },
        )
        found = {(p, r): stored_response(m, f, resp) for p, r, m, f, resp in await cur.fetchall()}
        if len(found) != len(keys):
            # Purged between the statements: the group fails and its calls run one by one.
            raise RuntimeError("idempotency keys neither claimable nor readable")
        return found

    def write(self, writes: GroupWrites) -> None:
        """Apply a decided group in one statement, sent with the commit."""
        parts: list[str] = []
        params: dict[str, Any] = {}
        if writes.transactions:
            parts.append(RECORD_POSTED)
            params.update(record_params(writes.transactions))
        if writes.responses:
            parts.append(STORE_RESPONSES)
            params.update(response_params(writes.responses))
        if writes.released:
            parts.append(_RELEASE_KEYS)
            params["released_principals"] = text_array([p for p, _ in writes.released])
            params["released_request_ids"] = uuid_array([r for _, r in writes.released])
        if writes.events:
            parts.append(APPEND_EVENTS)
            params.update(event_params(writes.events))
        if writes.audit:
            parts.append(_APPEND_AUDIT)
            params.update(_audit_params(writes.audit))
        if parts:
            # Data-modifying CTEs all run to completion, referenced or not.
            self._at_commit.add(with_statement(*parts), params)


def _audit_params(entries: Sequence[NewAuditEntry]) -> dict[str, BinaryArray]:
    # Resource ids are uuids, which hold no spaces: one string per row keeps the arrays
    # rectangular.
    return {
        "audit_call_ids": uuid_array([e.call_id for e in entries]),
        "audit_times": timestamptz_array([e.occurred_at for e in entries]),
        "audit_principals": text_array([e.principal for e in entries]),
        "audit_methods": text_array([e.method for e in entries]),
        "audit_resources": text_array([" ".join(e.resource_ids) for e in entries]),
        "audit_codes": text_array([e.code for e in entries]),
        "audit_latencies": bigint_array([e.latency_us for e in entries]),
        "audit_peers": text_array([e.peer for e in entries]),
        "audit_request_ids": text_array([e.request_id for e in entries]),
    }
