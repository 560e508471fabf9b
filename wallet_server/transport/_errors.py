"""The one place where failures become gRPC statuses with rich error details.

Every status carries ``google.rpc.ErrorInfo{reason, domain: "wallet.v1"}``; bad input adds
``google.rpc.BadRequest`` field violations. Unexpected exceptions become ``INTERNAL`` with a
generic message: no stack trace, SQL or driver text ever reaches a client.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from wallet_server.domain import (
    InvalidArgument,
    Reason,
    Unavailable,
    Unimplemented,
    WalletError,
)
from wallet_server.services import database_unavailable

ERROR_DOMAIN = "wallet.v1"

_log = logging.getLogger(__name__)


class RpcFailure(Exception):
    """A call that ends with a non-OK status, ready to send."""

    def __init__(self, code_name: str, status: grpc.Status) -> None:
        super().__init__(code_name)
        self.code_name = code_name
        self.status = status


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def failure_from_error(error: WalletError) -> RpcFailure:
    try:
        return _rich_failure(error)
    except Exception:  # a malformed error must still end as a clean INTERNAL, never UNKNOWN
        _log.exception("could not encode %r", error)
        return RpcFailure(
            "INTERNAL",
            rpc_status.to_status(
                status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")
            ),
        )


def _rich_failure(error: WalletError) -> RpcFailure:
    code = code_pb2.Code.Value(error.status_name)
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
            )
        )
    ]
    if isinstance(error, InvalidArgument) and error.violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    status = status_pb2.Status(code=code, message=error.message, details=details)
    return RpcFailure(error.status_name, rpc_status.to_status(status))


def failure_from_exception(exc: BaseException, method: str) -> RpcFailure:
    """Map anything to a status; unknown exceptions are logged here and hidden from the client."""
    if isinstance(exc, WalletError):
        return failure_from_error(exc)
    if database_unavailable(exc):
        _log.warning("database unavailable in %s: %s", method, type(exc).__name__)
        return failure_from_error(
            Unavailable("the service is temporarily unavailable; retry later")
        )
    if isinstance(exc, NotImplementedError):
        return failure_from_error(
            Unimplemented(f"{method} is not implemented yet", reason=Reason.UNIMPLEMENTED)
        )
    _log.error("internal error in %s", method, exc_info=exc)
    return failure_from_error(
        WalletError("internal error; the request was not applied", reason=Reason.INTERNAL)
    )
