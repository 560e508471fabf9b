"""Withdrawals (提现): where the money goes, and the rules of a payout's life.

A withdrawal holds its amount on the user's account (PENDING: ``pending_out`` grows, posted
does not) until the payout partner it was routed to completes it (POSTED: the money moves to
the partner's settlement account and the hold is released) or fails it (VOIDED: the hold is
released, nothing moves). Only a PENDING withdrawal can be completed or failed, once.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from wallet_server.domain._errors import FailedPrecondition, FieldViolation, InvalidArgument, Reason
from wallet_server.domain._ledger import (
    Account,
    AccountKind,
    Posting,
    Transaction,
    TransactionKind,
    TransactionStatus,
    check_balanced,
)
from wallet_server.domain._money import Money
from wallet_server.domain._text import text_problem

MAX_HOLDER_NAME_LENGTH = 140
MAX_BANK_CODE_LENGTH = 35
MIN_ACCOUNT_NUMBER_LENGTH = 4
MAX_ACCOUNT_NUMBER_LENGTH = 34  # the longest IBAN

# ISO 3166-1 alpha-2: the officially assigned codes.
_ISO_3166_ALPHA2 = """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ
    BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM
    DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS
    GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN
    KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ
    MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM
    PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV
    SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI
    VN VU WF WS YE YT ZA ZM ZW
"""
ISO_COUNTRY_CODES = frozenset(_ISO_3166_ALPHA2.split())

_CODE = re.compile(r"[A-Z0-9]+")
_IBAN_SHAPE = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}")
_SEPARATORS = str.maketrans("", "", " -")


@dataclass(frozen=True, slots=True)
class PayoutDestination:
    """A bank account outside the wallet, in canonical form (see ``parse_payout_destination``).

    Secret at rest: stored sealed, disclosed only to the payout partner of the withdrawal.
    """

    holder_name: str
    country_code: str
    bank_code: str
    account_number: str

    def __repr__(self) -> str:  # never print account details into logs or tracebacks
        return f"PayoutDestination(country_code={self.country_code!r}, ...)"


def is_valid_iban(value: str) -> bool:
    """ISO 13616: shape and the mod-97 check digits (``value`` upper case, no separators)."""
    if not _IBAN_SHAPE.fullmatch(value):
        return False
    rearranged = value[4:] + value[:4]
    digits = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(digits) % 97 == 1


def _looks_like_iban(value: str) -> bool:
    return len(value) >= 15 and value[:2].isalpha() and value[2:4].isdigit()


def parse_payout_destination(
    *,
    holder_name: str,
    country_code: str,
    bank_code: str,
    account_number: str,
    field: str = "destination",
) -> PayoutDestination:
    """Validate and canonicalise a destination; every bad field is one violation named
    ``<field>.<name>``.

    Canonical form: the holder name trimmed; the country, bank code and account number upper
    case without spaces or hyphens. An account number that looks like an IBAN (two letters, two
    digits) must be a valid IBAN of ``country_code``; any other account number needs a bank
    code.
    """
    violations: list[FieldViolation] = []

    def bad(name: str, description: str) -> None:
        violations.append(FieldViolation(f"{field}.{name}", description))

    holder = holder_name.strip()
    if not holder:
        bad("holder_name", "required")
    elif len(holder) > MAX_HOLDER_NAME_LENGTH:
        bad("holder_name", f"at most {MAX_HOLDER_NAME_LENGTH} characters")
    elif (problem := text_problem(holder)) is not None:
        bad("holder_name", problem)
    elif not any(ch.isalpha() for ch in holder):
        bad("holder_name", "must contain letters")

    country = country_code.strip().upper()
    if not country:
        bad("country_code", "required")
    elif country not in ISO_COUNTRY_CODES:
        bad("country_code", "must be an ISO 3166-1 alpha-2 country code, e.g. DE")

    bank = bank_code.translate(_SEPARATORS).upper()
    if len(bank) > MAX_BANK_CODE_LENGTH:
        bad("bank_code", f"at most {MAX_BANK_CODE_LENGTH} characters")
    elif bank and not (bank.isascii() and _CODE.fullmatch(bank)):
        bad("bank_code", "only letters A-Z and digits (spaces and hyphens are ignored)")

    number = account_number.translate(_SEPARATORS).upper()
    if not number:
        bad("account_number", "required")
    elif not (MIN_ACCOUNT_NUMBER_LENGTH <= len(number) <= MAX_ACCOUNT_NUMBER_LENGTH):
        bad(
            "account_number",
            f"{MIN_ACCOUNT_NUMBER_LENGTH} to {MAX_ACCOUNT_NUMBER_LENGTH} letters or digits",
        )
    elif not (number.isascii() and _CODE.fullmatch(number)):
        bad("account_number", "only letters A-Z and digits (spaces and hyphens are ignored)")
    elif _looks_like_iban(number):
        if not is_valid_iban(number):
            bad("account_number", "not a valid IBAN (check digits)")
        elif country in ISO_COUNTRY_CODES and number[:2] != country:
            bad("account_number", f"an IBAN of {number[:2]}, not of country_code {country}")
    elif not bank and not any(v.field == f"{field}.bank_code" for v in violations):
        bad("bank_code", "required unless account_number is an IBAN")

    if violations:
        raise InvalidArgument(
            "; ".join(f"{v.field}: {v.description}" for v in violations),
            violations=tuple(violations),
        )
    return PayoutDestination(
        holder_name=holder, country_code=country, bank_code=bank, account_number=number
    )


# --- the life of a withdrawal ---------------------------------------------------------------


def plan_withdrawal_hold(account: Account, amount: Money) -> dict[UUID, int]:
    """Decide the hold of a new withdrawal of ``amount`` from the user's ``account``.

    Returns the ``pending_out`` change per account. Checks run in a fixed order: frozen,
    currency, funds.
    """
    if account.kind is not AccountKind.USER:
        raise ValueError("withdrawals leave user accounts only")
    if amount.amount_minor <= 0:
        raise ValueError("a withdrawal amount is positive")
    if account.frozen:
        raise FailedPrecondition("the account is frozen", reason=Reason.ACCOUNT_FROZEN)
    if account.currency != amount.currency:
        raise FailedPrecondition(
            f"the account holds {account.currency}, not {amount.currency}",
            reason=Reason.CURRENCY_MISMATCH,
        )
    if account.available < amount.amount_minor:
        raise FailedPrecondition(
            f"available {Money(account.currency, account.available).format()} "
            f"is less than {amount.format()}",
            reason=Reason.INSUFFICIENT_FUNDS,
        )
    return {account.account_id: amount.amount_minor}


def new_withdrawal(
    *,
    transaction_id: UUID,
    account: Account,
    settlement_account_id: UUID,
    partner_id: UUID,
    amount: Money,
    now: datetime,
) -> Transaction:
    """The PENDING WITHDRAWAL transaction: no postings yet, routed to ``partner_id``."""
    return Transaction(
        transaction_id=transaction_id,
        kind=TransactionKind.WITHDRAWAL,
        status=TransactionStatus.PENDING,
        amount=amount,
        from_account_id=account.account_id,
        to_account_id=settlement_account_id,
        memo="",
        external_reference="",
        created_at=now,
        posted_at=None,
        postings=(),
        partner_id=partner_id,
    )


def withdrawal_routed_to(tx: Transaction, partner_id: UUID) -> bool:
    """Whether ``tx`` is a withdrawal that ``partner_id`` may complete or fail."""
    return tx.kind is TransactionKind.WITHDRAWAL and tx.partner_id == partner_id


def ensure_withdrawal_pending(tx: Transaction) -> None:
    """Only a PENDING withdrawal can be completed or failed (and only once)."""
    if tx.status is not TransactionStatus.PENDING:
        raise FailedPrecondition(
            f"the withdrawal is {tx.status.value.upper()}, not PENDING"
        )  # reason FAILED_PRECONDITION, the default


@dataclass(frozen=True, slots=True)
class WithdrawalSettlement:
    """How a pending withdrawal ends: the transaction as it is after, its new legs and the
    ``pending_out`` changes (negative: released)."""

    transaction: Transaction
    legs: tuple[Posting, ...]
    holds: dict[UUID, int]


def _held_source(tx: Transaction, source: Account) -> None:
    if source.account_id != tx.from_account_id or source.pending_out < tx.amount.amount_minor:
        # The hold is gone: the ledger is corrupt. Not a client error.
        raise RuntimeError(f"withdrawal {tx.transaction_id} has no matching hold")


def plan_withdrawal_completion(
    tx: Transaction,
    *,
    source: Account,
    settlement: Account,
    external_reference: str,
    now: datetime,
) -> WithdrawalSettlement:
    """The payout partner paid the bank: the held amount moves to its settlement account.

    A freeze placed after the request does not stop it: the money was committed to the payout
    when it was held, and the partner has already paid it out.
    """
    ensure_withdrawal_pending(tx)
    _held_source(tx, source)
    if settlement.account_id != tx.to_account_id or settlement.currency != tx.amount.currency:
        raise RuntimeError(f"withdrawal {tx.transaction_id} has no matching settlement account")
    amount = tx.amount.amount_minor
    legs = (
        Posting(source.account_id, -amount, tx.amount.currency),
        Posting(settlement.account_id, amount, tx.amount.currency),
    )
    check_balanced(legs)
    done = dataclasses.replace(
        tx,
        status=TransactionStatus.POSTED,
        posted_at=now,
        postings=legs,
        external_reference=external_reference,
    )
    return WithdrawalSettlement(done, legs, {source.account_id: -amount})


def plan_withdrawal_failure(
    tx: Transaction, *, source: Account, failure_message: str
) -> WithdrawalSettlement:
    """The payout partner could not pay: the hold is released, nothing moves (VOIDED)."""
    ensure_withdrawal_pending(tx)
    _held_source(tx, source)
    voided = dataclasses.replace(
        tx, status=TransactionStatus.VOIDED, status_message=failure_message
    )
    return WithdrawalSettlement(voided, (), {source.account_id: -tx.amount.amount_minor})
