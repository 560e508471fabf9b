"""Pure business rules: money, ledger postings, errors. No I/O, no protobuf, no SQL."""

from wallet_server.domain._errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RateLimited,
    Reason,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    WalletError,
)

__all__ = [
    "AlreadyExists",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "Reason",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "WalletError",
]
