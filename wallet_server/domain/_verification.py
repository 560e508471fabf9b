"""Ledger invariants and the violations VerifyLedger reports."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

from wallet_server.domain._money import Money


class LedgerInvariant(StrEnum):
    BALANCED_POSTINGS = "balanced_postings"  # a transaction's postings sum to zero per currency
    POSTED_BALANCE = "posted_balance"  # stored posted == sum of the account's postings
    PENDING_BALANCE = "pending_balance"  # stored pending_out == sum of its open holds
    NON_NEGATIVE = "non_negative"  # user posted/available >= 0; pending_out >= 0 everywhere
    HASH_CHAIN = "hash_chain"  # posted history matches its hash chain
    POSTINGS_MATCH_STATUS = "postings_match_status"  # exactly POSTED transactions have legs
    SINGLE_REVERSAL = "single_reversal"  # a transaction is reversed at most once
    # a posted transaction's legs do what its header says, in its accounts' currencies
    POSTINGS_MATCH_TRANSACTION = "postings_match_transaction"
    # a balance (a system account's row plus its changes not folded yet) fits int64
    BALANCE_IN_RANGE = "balance_in_range"


@dataclass(frozen=True, slots=True)
class LedgerViolation:
    """One broken invariant; ``expected``/``actual`` are set when it is about an amount."""

    invariant: LedgerInvariant
    description: str
    account_id: UUID | None = None
    transaction_id: UUID | None = None
    expected: Money | None = None
    actual: Money | None = None
