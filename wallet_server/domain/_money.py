"""Money: an exact int64 count of minor units in one ISO 4217 currency.

No floats anywhere: amounts are integers, decimal text is parsed and written digit by digit.
Sums that leave the int64 range are refused, because PostgreSQL ``bigint`` and protobuf
``int64`` cannot hold them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Self

from wallet_server.domain._currencies import CURRENCY_EXPONENTS
from wallet_server.domain._errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    Reason,
)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# ASCII digits only: str.isdigit and \d also accept other scripts' digits.
_DECIMAL_AMOUNT = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")
# Echoed input is cut to this length so an error message stays short.
_MAX_ECHOED_CHARS = 40
# INT64_MAX has 19 digits; longer digit strings are out of range whatever the exponent.
_MAX_INT64_DIGITS = 19


def _echo(text: object) -> str:
    shown = repr(text)
    if len(shown) > _MAX_ECHOED_CHARS:
        return shown[: _MAX_ECHOED_CHARS - 3] + "..."
    return shown


def _currency_problem(code: object) -> str | None:
    """Why ``code`` is not a currency we hold, or None if it is one."""
    if not isinstance(code, str):
        return f"must be a string, got {type(code).__name__}"
    if code == "":
        return "required"
    if code in CURRENCY_EXPONENTS:
        return None
    if code.upper() in CURRENCY_EXPONENTS:
        return f"unknown currency {_echo(code)} (codes are upper case: {code.upper()!r})"
    return f"unknown currency {_echo(code)}"


def _amount_problem(amount_minor: object) -> str | None:
    """Why ``amount_minor`` is not an int64, or None if it is one."""
    # bool is an int subclass; True must not silently mean one cent.
    if not isinstance(amount_minor, int) or isinstance(amount_minor, bool):
        return f"must be an integer, got {type(amount_minor).__name__}"
    if not INT64_MIN <= amount_minor <= INT64_MAX:
        return "out of the int64 range"
    return None


def currency_exponent(code: str) -> int:
    """Number of decimal places of the currency's minor unit (USD 2, JPY 0, KWD 3)."""
    problem = _currency_problem(code)
    if problem is not None:
        raise InvalidArgument(f"bad currency code: {problem}")
    return CURRENCY_EXPONENTS[code]


@dataclass(frozen=True, slots=True)
class Money:
    """An amount of ``amount_minor`` minor units of ``currency`` (1234 USD cents = 12.34 USD)."""

    currency: str
    amount_minor: int

    def __post_init__(self) -> None:
        problem = _currency_problem(self.currency)
        if problem is not None:
            raise InvalidArgument(f"Money.currency: {problem}")
        problem = _amount_problem(self.amount_minor)
        if problem is not None:
            raise InvalidArgument(f"Money.amount_minor: {problem}")

    @classmethod
    def zero(cls, currency: str) -> Self:
        return cls(currency, 0)

    def is_positive(self) -> bool:
        return self.amount_minor > 0

    def is_negative(self) -> bool:
        return self.amount_minor < 0

    def is_zero(self) -> bool:
        return self.amount_minor == 0

    def __add__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._require_same_currency(other, "add")
        return self._with_checked_amount(self.amount_minor + other.amount_minor)

    def __sub__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._require_same_currency(other, "subtract")
        return self._with_checked_amount(self.amount_minor - other.amount_minor)

    def __neg__(self) -> Money:
        # -INT64_MIN does not fit in int64.
        return self._with_checked_amount(-self.amount_minor)

    def format(self) -> str:
        """Human-readable text, e.g. ``"12.34 USD"``, ``"1200 JPY"``, ``"-0.05 EUR"``."""
        return f"{format_decimal_amount(self)} {self.currency}"

    def __str__(self) -> str:
        return self.format()

    def _require_same_currency(self, other: Money, operation: str) -> None:
        if other.currency != self.currency:
            raise FailedPrecondition(
                f"cannot {operation} {other.currency} and {self.currency} amounts",
                reason=Reason.CURRENCY_MISMATCH,
                metadata={"currency": self.currency, "other_currency": other.currency},
            )

    def _with_checked_amount(self, amount_minor: int) -> Money:
        if not INT64_MIN <= amount_minor <= INT64_MAX:
            raise FailedPrecondition(
                f"{self.currency} amount out of the int64 range of minor units",
                reason=Reason.AMOUNT_OVERFLOW,
                metadata={"currency": self.currency},
            )
        return Money(self.currency, amount_minor)


def _raise_violations(violations: list[FieldViolation]) -> None:
    if violations:
        message = "; ".join(f"{v.field}: {v.description}" for v in violations)
        raise InvalidArgument(message, violations=tuple(violations))


def parse_money(
    currency_code: str,
    amount_minor: int,
    *,
    field: str,
    require_positive: bool = True,
) -> Money:
    """Validate a request's money field; violations name ``{field}.currency_code`` and
    ``{field}.amount_minor``, all of them at once."""
    violations: list[FieldViolation] = []
    currency_problem = _currency_problem(currency_code)
    if currency_problem is not None:
        violations.append(FieldViolation(f"{field}.currency_code", currency_problem))
    amount_problem = _amount_problem(amount_minor)
    if amount_problem is None and require_positive and amount_minor <= 0:
        amount_problem = "must be positive"
    if amount_problem is not None:
        violations.append(FieldViolation(f"{field}.amount_minor", amount_problem))
    _raise_violations(violations)
    return Money(currency_code, amount_minor)


def parse_currency(code: str, *, field: str) -> str:
    """Validate a request's bare currency code field, named ``field`` in the violation."""
    problem = _currency_problem(code)
    if problem is not None:
        raise InvalidArgument.for_field(field, problem)
    return code


def parse_decimal_amount(text: str, currency: str) -> Money:
    """Parse human decimal text such as ``"12.34"`` or ``"-0.5"`` into minor units.

    Accepts an optional leading '-', ASCII digits, and at most the currency's exponent of
    digits after a '.'. Rejects '+', exponents, separators, whitespace and empty text.
    """
    exponent = currency_exponent(currency)
    match = _DECIMAL_AMOUNT.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        allowed = "digits" if exponent == 0 else f"digits with up to {exponent} decimals"
        raise InvalidArgument(
            f"amount {_echo(text)} is not a {currency} amount: "
            f"expected an optional '-' and {allowed}"
        )
    sign, whole, fraction = match.group(1), match.group(2), match.group(3) or ""
    if len(fraction) > exponent:
        raise InvalidArgument(
            f"amount {_echo(text)} has {len(fraction)} decimals; {currency} allows {exponent}"
        )
    digits = (whole + fraction.ljust(exponent, "0")).lstrip("0")
    if len(digits) > _MAX_INT64_DIGITS:
        raise InvalidArgument(f"amount {_echo(text)} is out of range for {currency}")
    amount_minor = int(digits or "0")
    if sign:
        amount_minor = -amount_minor
    if not INT64_MIN <= amount_minor <= INT64_MAX:
        raise InvalidArgument(f"amount {_echo(text)} is out of range for {currency}")
    return Money(currency, amount_minor)


def format_decimal_amount(money: Money) -> str:
    """The amount as plain decimal text with exactly the currency's decimals: ``"12.34"``."""
    exponent = CURRENCY_EXPONENTS[money.currency]
    sign = "-" if money.amount_minor < 0 else ""
    whole, fraction = divmod(abs(money.amount_minor), 10**exponent)
    if exponent == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:0{exponent}d}"
