"""Exactly-once execution of mutating calls, keyed by (principal, request_id).

The record is claimed and completed inside the caller's transaction, so it commits with the
effect. A business refusal (insufficient funds, not found...) is remembered too: a retry gets
the same answer even if the balance has changed since.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from uuid import UUID

from wallet_server.domain import AlreadyExists, FailedPrecondition, NotFound, Reason, WalletError
from wallet_server.services._codec import decode_as, encode, to_json
from wallet_server.services._unit_of_work import UnitOfWork

T = TypeVar("T")

# Refusals that depend on the state of the ledger; they are part of the remembered outcome.
_REMEMBERED_ERRORS: dict[str, type[WalletError]] = {
    "ALREADY_EXISTS": AlreadyExists,
    "FAILED_PRECONDITION": FailedPrecondition,
    "NOT_FOUND": NotFound,
}
REMEMBERED_ERRORS = tuple(_REMEMBERED_ERRORS.values())


def fingerprint(method: str, command: Any) -> bytes:
    """What makes two requests 'the same payload': the method and every field but the key."""
    return fingerprint_of(
        method,
        {
            f.name: encode(getattr(command, f.name))
            for f in dataclasses.fields(command)
            if f.name not in {"request_id", "caller"}
        },
    )


def fingerprint_of(method: str, encoded_fields: dict[str, Any]) -> bytes:
    """:func:`fingerprint` from a command's fields (all but the key), already encoded."""
    canonical = json.dumps([method, encoded_fields], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


async def run_once(
    uow: UnitOfWork,
    *,
    principal: str,
    request_id: UUID,
    method: str,
    command: Any,
    result_type: type[T],
    execute: Callable[[], Awaitable[T]],
) -> T:
    """Run ``execute`` once per key; on a replay return (or raise) what the first run did.

    Must be called inside ``async with uow``; the caller commits on success.
    """
    assert dataclasses.is_dataclass(command)
    digest = fingerprint(method, command)
    prior = await uow.idempotency.claim(
        principal=principal, request_id=request_id, method=method, fingerprint=digest
    )
    if prior is not None:
        if prior.fingerprint != digest:
            raise key_reused()
        outcome = replay(prior.response, result_type)
        if isinstance(outcome, WalletError):
            raise outcome
        return outcome
    try:
        async with uow.driver_savepoint(undo_on=REMEMBERED_ERRORS):
            result = await execute()
    except REMEMBERED_ERRORS as exc:
        uow.idempotency.store_response(
            principal=principal, request_id=request_id, response=refusal_response(exc)
        )
        await uow.commit(code=exc.status_name)
        raise
    uow.idempotency.store_response(
        principal=principal, request_id=request_id, response=success_response(result)
    )
    return result


def key_reused() -> FailedPrecondition:
    return FailedPrecondition(
        "request_id was already used with a different request",
        reason=Reason.IDEMPOTENCY_KEY_REUSED,
    )


def refusal_response(exc: WalletError) -> str:
    """The stored form of a remembered refusal, as JSON text."""
    return stored_refusal(exc.status_name, exc.reason, exc.message)


def stored_refusal(status: str, reason: str, message: str) -> str:
    """:func:`refusal_response` from its parts (a batch item's refusal is not an exception)."""
    return to_json({"error": {"status": status, "reason": reason, "message": message}})


def success_response(result: Any) -> str:
    """The stored form of a result, as JSON text."""
    return to_json({"result": result})


def replay(response: Any, result_type: type[T]) -> T | WalletError:
    """What the first run returned, or the refusal it raised (to be raised again)."""
    if response is None:
        raise RuntimeError("idempotency record without a response")
    if "error" in response:
        error = response["error"]
        refusal: WalletError = _REMEMBERED_ERRORS[error["status"]](
            error["message"], reason=error["reason"]
        )
        return refusal
    return decode_as(result_type, response["result"])
