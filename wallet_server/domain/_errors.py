"""The domain's exception hierarchy.

Every failure a client may see is one of these. Each carries a machine-readable ``reason``
(the ``ErrorInfo.reason`` on the wire) and a human message; transport maps the class to a
gRPC status code in one place. Anything else that escapes a use case is an internal error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    """``ErrorInfo.reason`` values: public contract, never renamed."""

    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    ACCOUNT_FROZEN = "ACCOUNT_FROZEN"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    QUOTE_EXPIRED = "QUOTE_EXPIRED"
    ORDER_ALREADY_PAID = "ORDER_ALREADY_PAID"
    ORDER_EXPIRED = "ORDER_EXPIRED"
    REFUND_EXCEEDS_PAYMENT = "REFUND_EXCEEDS_PAYMENT"
    SECOND_FACTOR_REQUIRED = "SECOND_FACTOR_REQUIRED"
    STEP_UP_REQUIRED = "STEP_UP_REQUIRED"
    INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    TOKEN_INVALID = "TOKEN_INVALID"
    REFRESH_TOKEN_REUSED = "REFRESH_TOKEN_REUSED"
    CREDENTIALS_MISSING = "CREDENTIALS_MISSING"
    CERTIFICATE_REVOKED = "CERTIFICATE_REVOKED"
    UNKNOWN_PRINCIPAL = "UNKNOWN_PRINCIPAL"
    WRONG_PRINCIPAL_KIND = "WRONG_PRINCIPAL_KIND"
    MISSING_SCOPE = "MISSING_SCOPE"
    RATE_LIMITED = "RATE_LIMITED"
    USERNAME_TAKEN = "USERNAME_TAKEN"
    SAME_ACCOUNT = "SAME_ACCOUNT"
    AMOUNT_OVERFLOW = "AMOUNT_OVERFLOW"
    ABORTED = "ABORTED"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    INTERNAL = "INTERNAL"
    UNAVAILABLE = "UNAVAILABLE"
    UNIMPLEMENTED = "UNIMPLEMENTED"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad input field: ``field`` is the request field path, e.g. ``amount.amount_minor``."""

    field: str
    description: str


class WalletError(Exception):
    """Base of all errors a client is allowed to see.

    ``status_name`` is the canonical status code (google.rpc.Code name) of the class.
    """

    default_reason = "INTERNAL"
    status_name = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(WalletError):
    """The request is malformed; nothing was looked at in the database."""

    default_reason = "INVALID_ARGUMENT"
    status_name = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        violations: tuple[FieldViolation, ...] = (),
        reason: str | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        self.violations = violations

    @classmethod
    def for_field(cls, field: str, description: str) -> InvalidArgument:
        return cls(f"{field}: {description}", violations=(FieldViolation(field, description),))


class NotFound(WalletError):
    """The object does not exist, or the caller may not know that it exists."""

    default_reason = "NOT_FOUND"
    status_name = "NOT_FOUND"


class AlreadyExists(WalletError):
    default_reason = "ALREADY_EXISTS"
    status_name = "ALREADY_EXISTS"


class FailedPrecondition(WalletError):
    """A business rule refused the operation (insufficient funds, frozen account, ...)."""

    default_reason = "FAILED_PRECONDITION"
    status_name = "FAILED_PRECONDITION"


class Unauthenticated(WalletError):
    """No valid identity: missing, expired or tampered credentials."""

    default_reason = "UNAUTHENTICATED"
    status_name = "UNAUTHENTICATED"


class PermissionDenied(WalletError):
    """A valid identity that may not do this."""

    default_reason = "PERMISSION_DENIED"
    status_name = "PERMISSION_DENIED"


class RateLimited(WalletError):
    default_reason = "RATE_LIMITED"
    status_name = "RESOURCE_EXHAUSTED"


class Unavailable(WalletError):
    """A dependency (the database) cannot be reached right now; the call may be retried."""

    default_reason = "UNAVAILABLE"
    status_name = "UNAVAILABLE"


class Unimplemented(WalletError):
    default_reason = "UNIMPLEMENTED"
    status_name = "UNIMPLEMENTED"
