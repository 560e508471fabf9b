"""Currency exchange: rates, quotes, the rounding rule and the four legs of an exchange.

A rate R is exact decimal text: major units of the to currency per one major unit of the from
currency. The exact value of ``from_minor`` minor units in the to currency is
``from_minor * R * 10^(e_to - e_from)`` minor units (e = the currencies' exponents). Rounding
always favours the wallet, by less than one minor unit (wallet.proto, GetQuote):

- given the amount sold: ``to = floor(exact)``;
- given the amount bought: ``from = ceil(to / (R * 10^(e_to - e_from)))``, the smallest amount
  whose conversion is at least ``to``.

All arithmetic is on :class:`fractions.Fraction`: exact, never a float.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from uuid import UUID

from wallet_server.domain._currencies import CURRENCY_EXPONENTS
from wallet_server.domain._errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Reason,
)
from wallet_server.domain._ledger import Account, Posting, check_balanced, plan_transfer
from wallet_server.domain._money import INT64_MAX, Money

# How long a quote can be executed after GetQuote made it.
QUOTE_LIFETIME = timedelta(seconds=30)

# A rate is digits, optionally '.' and 1 to 12 fraction digits (admin.proto, ExchangeRate.rate).
MAX_RATE_FRACTION_DIGITS = 12
# Integer digits after leading zeros; with the fraction limit this bounds every rate to
# [1e-12, 1e12) so the exact arithmetic stays small.
MAX_RATE_INTEGER_DIGITS = 12
# Longer text is refused before it is looked at (leading zeros included).
MAX_RATE_TEXT_LENGTH = 40

# ASCII digits only: str.isdigit and \d also accept other scripts' digits.
_RATE_TEXT = re.compile(r"([0-9]+)(?:\.([0-9]+))?")


@dataclass(frozen=True, slots=True)
class ExchangeRate:
    """The operators' rate for exchanges ``from_currency`` → ``to_currency`` (one direction)."""

    from_currency: str
    to_currency: str
    rate: str  # canonical decimal text, see parse_rate
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Quote:
    """A priced exchange between two accounts of one user, executable once until it expires."""

    quote_id: UUID
    user_id: UUID
    from_account_id: UUID
    to_account_id: UUID
    from_amount: Money
    to_amount: Money
    rate: str
    created_at: datetime
    expires_at: datetime
    transaction_id: UUID | None = None  # the EXCHANGE, once executed


def parse_rate(text: str, *, field: str = "rate") -> str:
    """Validate rate text; return its canonical form (no leading or trailing zeros).

    ``"0151.370"`` → ``"151.37"``. Refused (INVALID_ARGUMENT on ``field``): empty text, signs,
    exponents, whitespace, separators, more than 12 fraction or integer digits, and zero.
    """

    def refuse(description: str) -> InvalidArgument:
        return InvalidArgument.for_field(field, description)

    if not isinstance(text, str) or text == "":
        raise refuse("required")
    if len(text) > MAX_RATE_TEXT_LENGTH:
        raise refuse(f"at most {MAX_RATE_TEXT_LENGTH} characters")
    match = _RATE_TEXT.fullmatch(text)
    if match is None:
        raise refuse("must be a positive decimal: digits, optionally '.' and fraction digits")
    whole = match.group(1).lstrip("0")
    fraction = (match.group(2) or "").rstrip("0")
    if match.group(2) is not None and len(match.group(2)) > MAX_RATE_FRACTION_DIGITS:
        raise refuse(f"at most {MAX_RATE_FRACTION_DIGITS} fraction digits")
    if len(whole) > MAX_RATE_INTEGER_DIGITS:
        raise refuse(f"at most {MAX_RATE_INTEGER_DIGITS} integer digits")
    if not whole and not fraction:
        raise refuse("must be positive")
    return f"{whole or '0'}.{fraction}" if fraction else whole


def rate_value(rate: str) -> Fraction:
    """The exact value of canonical (or any valid) rate text."""
    return Fraction(parse_rate(rate))


def _minor_per_minor(rate: str, from_currency: str, to_currency: str) -> Fraction:
    """R * 10^(e_to - e_from): to-currency minor units per one from-currency minor unit."""
    shift = CURRENCY_EXPONENTS[to_currency] - CURRENCY_EXPONENTS[from_currency]
    return rate_value(rate) * Fraction(10) ** shift


def exact_conversion(from_amount: Money, to_currency: str, rate: str) -> Fraction:
    """The unrounded value of ``from_amount`` in minor units of ``to_currency``."""
    return from_amount.amount_minor * _minor_per_minor(rate, from_amount.currency, to_currency)


def _overflow(field: str, currency: str) -> InvalidArgument:
    return InvalidArgument(
        f"{field}: the converted amount is out of the int64 range of {currency} minor units",
        violations=(FieldViolation(field, "the converted amount does not fit in int64"),),
        reason=Reason.AMOUNT_OVERFLOW,
    )


def convert_sold(from_amount: Money, to_currency: str, rate: str) -> Money:
    """Given what is sold: what is bought, rounded down. Refuses zero and int64 overflow."""
    to_minor = math.floor(exact_conversion(from_amount, to_currency, rate))
    field = "from_amount.amount_minor"
    if to_minor <= 0:
        raise InvalidArgument(
            f"{from_amount.format()} converts to less than one minor unit of {to_currency}",
            violations=(FieldViolation(field, f"converts to zero {to_currency}"),),
        )
    if to_minor > INT64_MAX:
        raise _overflow(field, to_currency)
    return Money(to_currency, to_minor)


def convert_bought(to_amount: Money, from_currency: str, rate: str) -> Money:
    """Given what is bought: the smallest amount sold whose conversion is at least it."""
    if to_amount.amount_minor <= 0:
        raise InvalidArgument.for_field("to_amount.amount_minor", "must be positive")
    from_minor = math.ceil(
        to_amount.amount_minor / _minor_per_minor(rate, from_currency, to_amount.currency)
    )
    if from_minor > INT64_MAX:
        raise _overflow("to_amount.amount_minor", from_currency)
    return Money(from_currency, from_minor)


def price_quote(
    *,
    source: Account,
    destination: Account,
    rate: ExchangeRate | None,
    from_amount: Money | None = None,
    to_amount: Money | None = None,
) -> tuple[Money, Money]:
    """Both amounts of an exchange from ``source`` to ``destination`` with one side fixed.

    Checks, in this order: the currencies differ (INVALID_ARGUMENT), the fixed amount is in
    its account's currency (INVALID_ARGUMENT), a rate is set (FAILED_PRECONDITION), the
    conversion is positive and fits int64 (INVALID_ARGUMENT).
    """
    if (from_amount is None) == (to_amount is None):
        raise ValueError("exactly one of from_amount and to_amount")
    if source.currency == destination.currency:
        raise InvalidArgument.for_field(
            "to_account_id", f"must hold another currency than from_account_id ({source.currency})"
        )
    if from_amount is not None and from_amount.currency != source.currency:
        raise InvalidArgument.for_field(
            "from_amount.currency_code", f"must be the from account's currency {source.currency}"
        )
    if to_amount is not None and to_amount.currency != destination.currency:
        raise InvalidArgument.for_field(
            "to_amount.currency_code", f"must be the to account's currency {destination.currency}"
        )
    if rate is None:
        raise FailedPrecondition(
            f"no exchange rate is set for {source.currency} to {destination.currency}"
        )
    if (rate.from_currency, rate.to_currency) != (source.currency, destination.currency):
        raise ValueError("the rate is for another pair of currencies")
    if from_amount is not None:
        return from_amount, convert_sold(from_amount, destination.currency, rate.rate)
    assert to_amount is not None
    return convert_bought(to_amount, source.currency, rate.rate), to_amount


def check_quote_executable(quote: Quote | None, *, user_id: UUID, now: datetime) -> Quote:
    """The quote, if the user may execute it now: NOT_FOUND when it is not theirs,
    QUOTE_EXPIRED when it was executed already or ``now`` is after its expiry."""
    if quote is None or quote.user_id != user_id:
        raise NotFound("quote not found")
    if quote.transaction_id is not None:
        raise FailedPrecondition(
            f"the quote was already executed (transaction {quote.transaction_id})",
            reason=Reason.QUOTE_EXPIRED,
        )
    if now >= quote.expires_at:  # expired at its expiry, as orders and sessions are
        raise FailedPrecondition(
            f"the quote expired at {quote.expires_at.isoformat()}; ask for a new one",
            reason=Reason.QUOTE_EXPIRED,
        )
    return quote


def plan_exchange(
    quote: Quote,
    accounts: Mapping[UUID, Account],
    *,
    from_pool_id: UUID,
    to_pool_id: UUID,
) -> tuple[Posting, ...]:
    """The four legs of executing ``quote`` (two per currency, each pair summing to zero):
    the source pays ``from_amount`` into the FX pool of its currency, the FX pool of the
    other currency pays ``to_amount`` to the destination. ``accounts`` are locked rows.

    Refusals: ACCOUNT_FROZEN (either user account), INSUFFICIENT_FUNDS (source available),
    AMOUNT_OVERFLOW (a balance would leave int64).
    """
    source = accounts[quote.from_account_id]
    destination = accounts[quote.to_account_id]
    if destination.frozen and not source.frozen:
        # The same reason whichever side is frozen; checked before the funds.
        raise FailedPrecondition("the destination account is frozen", reason=Reason.ACCOUNT_FROZEN)
    sold = plan_transfer(source, accounts[from_pool_id], quote.from_amount)
    bought = plan_transfer(accounts[to_pool_id], destination, quote.to_amount)
    legs = sold + bought
    check_balanced(legs)
    return legs


__all__ = [
    "MAX_RATE_FRACTION_DIGITS",
    "MAX_RATE_INTEGER_DIGITS",
    "QUOTE_LIFETIME",
    "ExchangeRate",
    "Quote",
    "check_quote_executable",
    "convert_bought",
    "convert_sold",
    "exact_conversion",
    "parse_rate",
    "plan_exchange",
    "price_quote",
    "rate_value",
]
