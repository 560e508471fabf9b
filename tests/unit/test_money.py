from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet_server.domain import FailedPrecondition, FieldViolation, InvalidArgument, Reason
from wallet_server.domain._currencies import CURRENCY_EXPONENTS
from wallet_server.domain._money import (
    INT64_MAX,
    INT64_MIN,
    Money,
    currency_exponent,
    format_decimal_amount,
    parse_currency,
    parse_decimal_amount,
    parse_money,
)

ALL_CURRENCIES = sorted(CURRENCY_EXPONENTS)
int64s = st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
currencies = st.sampled_from(ALL_CURRENCIES)


def money_or_overflow(operation: Any) -> Money | None:
    """The operation's result, or None if it was refused as an int64 overflow."""
    try:
        result = operation()
    except FailedPrecondition as error:
        if error.reason != Reason.AMOUNT_OVERFLOW:
            raise
        return None
    assert isinstance(result, Money)
    return result


# --- the currency table -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "exponent"),
    [
        ("JPY", 0),
        ("KRW", 0),
        ("ISK", 0),
        ("VND", 0),
        ("CLP", 0),
        ("XAF", 0),
        ("XOF", 0),
        ("XPF", 0),
        ("UGX", 0),
        ("UYI", 0),
        ("USD", 2),
        ("EUR", 2),
        ("GBP", 2),
        ("CNY", 2),
        ("HUF", 2),
        ("IDR", 2),
        ("KWD", 3),
        ("BHD", 3),
        ("JOD", 3),
        ("OMR", 3),
        ("TND", 3),
        ("LYD", 3),
        ("IQD", 3),
        ("CLF", 4),
        ("UYW", 4),
    ],
)
def test_table_spot_checks(code: str, exponent: int) -> None:
    assert CURRENCY_EXPONENTS[code] == exponent
    assert currency_exponent(code) == exponent


def test_table_covers_the_current_list() -> None:
    assert len(CURRENCY_EXPONENTS) >= 150
    assert all(re.fullmatch("[A-Z]{3}", code) for code in CURRENCY_EXPONENTS)
    assert set(CURRENCY_EXPONENTS.values()) == {0, 2, 3, 4}


@pytest.mark.parametrize("code", ["XAU", "XAG", "XPT", "XDR", "XTS", "XXX", "HRK", "ZWL"])
def test_table_leaves_out_codes_without_a_minor_unit_or_withdrawn(code: str) -> None:
    assert code not in CURRENCY_EXPONENTS


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        CURRENCY_EXPONENTS["ABC"] = 2  # type: ignore[index]


@pytest.mark.parametrize("code", ["", "usd", "Usd", "XYZ", "USDX", "US", " USD", "XAU"])
def test_currency_exponent_rejects_unknown_codes(code: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        currency_exponent(code)
    assert caught.value.reason == Reason.INVALID_ARGUMENT


def test_lowercase_code_error_suggests_the_upper_case_code() -> None:
    with pytest.raises(InvalidArgument, match="'USD'"):
        currency_exponent("usd")


# --- constructing Money ---------------------------------------------------------------------


def test_money_holds_currency_and_minor_units() -> None:
    money = Money("USD", 1234)
    assert (money.currency, money.amount_minor) == ("USD", 1234)
    assert money == Money("USD", 1234)
    assert hash(money) == hash(Money("USD", 1234))
    assert money != Money("EUR", 1234)


def test_money_accepts_the_int64_edges() -> None:
    assert Money("USD", INT64_MAX).amount_minor == 2**63 - 1
    assert Money("USD", INT64_MIN).amount_minor == -(2**63)


@pytest.mark.parametrize("amount", [INT64_MAX + 1, INT64_MIN - 1, 10**30])
def test_money_rejects_amounts_outside_int64(amount: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        Money("USD", amount)
    assert caught.value.reason == Reason.INVALID_ARGUMENT


@pytest.mark.parametrize("amount", [True, False, 1.0, "100", None])
def test_money_rejects_non_integer_amounts(amount: object) -> None:
    with pytest.raises(InvalidArgument):
        Money("USD", amount)  # type: ignore[arg-type]


@pytest.mark.parametrize("currency", ["", "usd", "XYZ", "XAU", None, 840])
def test_money_rejects_unknown_currencies(currency: object) -> None:
    with pytest.raises(InvalidArgument):
        Money(currency, 100)  # type: ignore[arg-type]


def test_money_is_immutable() -> None:
    money = Money("USD", 1)
    with pytest.raises(AttributeError):
        money.amount_minor = 2  # type: ignore[misc]


def test_zero_and_sign_predicates() -> None:
    zero = Money.zero("KWD")
    assert zero == Money("KWD", 0)
    assert zero.is_zero()
    assert not zero.is_positive()
    assert not zero.is_negative()
    assert Money("KWD", 1).is_positive()
    assert not Money("KWD", 1).is_zero()
    assert Money("KWD", -1).is_negative()
    assert not Money("KWD", -1).is_positive()


def test_zero_rejects_unknown_currency() -> None:
    with pytest.raises(InvalidArgument):
        Money.zero("XYZ")


# --- arithmetic -----------------------------------------------------------------------------


def test_add_subtract_negate_same_currency() -> None:
    assert Money("USD", 150) + Money("USD", 275) == Money("USD", 425)
    assert Money("USD", 150) - Money("USD", 275) == Money("USD", -125)
    assert -Money("USD", 150) == Money("USD", -150)
    assert Money("USD", INT64_MAX) + Money("USD", INT64_MIN) == Money("USD", -1)


@pytest.mark.parametrize("operation", ["add", "subtract"])
def test_different_currencies_are_a_mismatch(operation: str) -> None:
    usd, eur = Money("USD", 100), Money("EUR", 100)
    with pytest.raises(FailedPrecondition) as caught:
        _ = usd + eur if operation == "add" else usd - eur
    assert caught.value.reason == Reason.CURRENCY_MISMATCH
    assert caught.value.metadata == {"currency": "USD", "other_currency": "EUR"}


def test_same_exponent_is_not_same_currency() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        Money("JPY", 1) + Money("KRW", 1)
    assert caught.value.reason == Reason.CURRENCY_MISMATCH


def test_adding_a_non_money_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        Money("USD", 1) + 1  # type: ignore[operator]


@pytest.mark.parametrize(
    "operation",
    [
        lambda: Money("USD", INT64_MAX) + Money("USD", 1),
        lambda: Money("USD", INT64_MIN) + Money("USD", -1),
        lambda: Money("USD", INT64_MIN) - Money("USD", 1),
        lambda: Money("USD", INT64_MAX) - Money("USD", -1),
        lambda: Money("USD", 0) - Money("USD", INT64_MIN),
        lambda: -Money("USD", INT64_MIN),
    ],
)
def test_leaving_int64_is_an_overflow(operation: Any) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        operation()
    assert caught.value.reason == Reason.AMOUNT_OVERFLOW


@given(int64s, int64s)
def test_add_and_subtract_are_exact_or_refused(a: int, b: int) -> None:
    for result, exact in [
        (money_or_overflow(lambda: Money("EUR", a) + Money("EUR", b)), a + b),
        (money_or_overflow(lambda: Money("EUR", a) - Money("EUR", b)), a - b),
    ]:
        if INT64_MIN <= exact <= INT64_MAX:
            assert result == Money("EUR", exact)
        else:
            assert result is None


@given(int64s, int64s, int64s)
def test_addition_is_associative_whenever_both_groupings_fit(a: int, b: int, c: int) -> None:
    x, y, z = Money("USD", a), Money("USD", b), Money("USD", c)
    left = money_or_overflow(lambda: (x + y) + z)
    right = money_or_overflow(lambda: x + (y + z))
    if left is not None and right is not None:
        assert left == right
    if left is not None or right is not None:
        assert INT64_MIN <= a + b + c <= INT64_MAX


small = st.integers(min_value=-(2**61), max_value=2**61)


@given(small, small, small)
def test_addition_is_associative_and_commutative_without_overflow(a: int, b: int, c: int) -> None:
    x, y, z = Money("JPY", a), Money("JPY", b), Money("JPY", c)
    assert (x + y) + z == x + (y + z) == Money("JPY", a + b + c)
    assert x + y == y + x
    assert x - y == x + (-y)
    assert x + Money.zero("JPY") == x


# --- formatting -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money("USD", 1234), "12.34 USD"),
        (Money("USD", 0), "0.00 USD"),
        (Money("USD", 5), "0.05 USD"),
        (Money("USD", 100), "1.00 USD"),
        (Money("EUR", -5), "-0.05 EUR"),
        (Money("EUR", -123456), "-1234.56 EUR"),
        (Money("JPY", 1200), "1200 JPY"),
        (Money("JPY", -1), "-1 JPY"),
        (Money("KWD", 1005), "1.005 KWD"),
        (Money("KWD", 1), "0.001 KWD"),
        (Money("CLF", 1), "0.0001 CLF"),
        (Money("CLF", 12345), "1.2345 CLF"),
        (Money("USD", INT64_MAX), "92233720368547758.07 USD"),
        (Money("USD", INT64_MIN), "-92233720368547758.08 USD"),
        (Money("JPY", INT64_MIN), "-9223372036854775808 JPY"),
    ],
)
def test_format(money: Money, text: str) -> None:
    assert money.format() == text
    assert str(money) == text
    assert format_decimal_amount(money) == text.split(" ")[0]


# --- parsing decimal text -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency", "amount_minor"),
    [
        ("1200", "JPY", 1200),
        ("0", "JPY", 0),
        ("-7", "JPY", -7),
        ("12.34", "USD", 1234),
        ("12.3", "USD", 1230),
        ("12", "USD", 1200),
        ("0.05", "USD", 5),
        ("-0.05", "EUR", -5),
        ("-0", "EUR", 0),
        ("007.50", "USD", 750),
        ("1.005", "KWD", 1005),
        ("1.5", "KWD", 1500),
        ("1.2345", "CLF", 12345),
        ("0.0001", "CLF", 1),
        ("92233720368547758.07", "USD", INT64_MAX),
        ("-92233720368547758.08", "USD", INT64_MIN),
        ("9223372036854775807", "JPY", INT64_MAX),
        ("0000000000000000000000000001", "JPY", 1),
    ],
)
def test_parse_decimal_amount(text: str, currency: str, amount_minor: int) -> None:
    assert parse_decimal_amount(text, currency) == Money(currency, amount_minor)


@pytest.mark.parametrize(
    ("text", "currency"),
    [
        ("12.5", "JPY"),
        ("12.0", "JPY"),
        ("12.345", "USD"),
        ("12.340", "USD"),
        ("1.0050", "KWD"),
        ("1.23456", "CLF"),
    ],
)
def test_parse_rejects_more_decimals_than_the_currency_has(text: str, currency: str) -> None:
    with pytest.raises(InvalidArgument, match="decimals"):
        parse_decimal_amount(text, currency)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-",
        "+1",
        "--1",
        "- 1",
        " 1",
        "1 ",
        "1e3",
        "1E3",
        "1.2.3",
        "1,000",
        "1_000",
        ".5",
        "5.",
        "NaN",
        "inf",
        "0x10",
        "\u0661\u0662",  # Arabic-Indic digits, which int() would accept
        "\uff11\uff12",  # full-width digits
        "12-",
    ],
)
def test_parse_rejects_malformed_text(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_decimal_amount(text, "USD")
    assert caught.value.reason == Reason.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("text", "currency"),
    [
        ("92233720368547758.08", "USD"),
        ("-92233720368547758.09", "USD"),
        ("9223372036854775808", "JPY"),
        ("10000000000000000000", "JPY"),
        ("1" * 5000, "JPY"),
    ],
)
def test_parse_rejects_amounts_outside_int64(text: str, currency: str) -> None:
    with pytest.raises(InvalidArgument, match="out of range") as caught:
        parse_decimal_amount(text, currency)
    assert len(caught.value.message) < 200


def test_parse_rejects_unknown_currency() -> None:
    with pytest.raises(InvalidArgument):
        parse_decimal_amount("1.00", "XYZ")


@given(currencies, int64s)
def test_format_then_parse_round_trips(currency: str, amount_minor: int) -> None:
    money = Money(currency, amount_minor)
    text = format_decimal_amount(money)
    exponent = CURRENCY_EXPONENTS[currency]
    assert ("." in text) == (exponent > 0)
    if exponent > 0:
        assert len(text.split(".")[1]) == exponent
    assert parse_decimal_amount(text, currency) == money


@pytest.mark.parametrize("currency", ALL_CURRENCIES)
def test_round_trip_at_the_edges_of_every_currency(currency: str) -> None:
    for amount_minor in (INT64_MIN, -1, 0, 1, INT64_MAX):
        money = Money(currency, amount_minor)
        assert parse_decimal_amount(format_decimal_amount(money), currency) == money


@given(currencies, st.integers(min_value=-(10**12), max_value=10**12), st.data())
def test_parse_then_format_is_canonical(currency: str, whole: int, data: st.DataObject) -> None:
    exponent = CURRENCY_EXPONENTS[currency]
    decimals = data.draw(st.integers(min_value=0, max_value=exponent))
    fraction = data.draw(st.integers(min_value=0, max_value=10**decimals - 1))
    sign = "-" if whole < 0 else ""
    text = f"{sign}{abs(whole)}" + (f".{fraction:0{decimals}d}" if decimals else "")
    parsed = parse_decimal_amount(text, currency)
    expected = abs(whole) * 10**exponent + fraction * 10 ** (exponent - decimals)
    assert parsed.amount_minor == (-expected if sign else expected)


# --- request validation ---------------------------------------------------------------------


def test_parse_money_returns_money() -> None:
    assert parse_money("USD", 1234, field="amount") == Money("USD", 1234)


def test_parse_money_names_the_currency_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_money("XYZ", 100, field="amount")
    assert caught.value.reason == Reason.INVALID_ARGUMENT
    assert caught.value.violations == (
        FieldViolation("amount.currency_code", "unknown currency 'XYZ'"),
    )


def test_parse_money_requires_a_currency() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_money("", 100, field="order.total")
    assert caught.value.violations == (FieldViolation("order.total.currency_code", "required"),)


@pytest.mark.parametrize("amount", [0, -1, INT64_MIN])
def test_parse_money_requires_a_positive_amount(amount: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_money("USD", amount, field="amount")
    assert caught.value.violations == (FieldViolation("amount.amount_minor", "must be positive"),)


def test_parse_money_reports_both_fields_together() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_money("", 0, field="amount")
    assert [v.field for v in caught.value.violations] == [
        "amount.currency_code",
        "amount.amount_minor",
    ]
    assert "amount.currency_code" in caught.value.message
    assert "amount.amount_minor" in caught.value.message


@pytest.mark.parametrize("amount", [0, -5, INT64_MIN])
def test_parse_money_allows_zero_and_negative_when_asked(amount: int) -> None:
    money = parse_money("KWD", amount, field="adjustment", require_positive=False)
    assert money == Money("KWD", amount)


@pytest.mark.parametrize("amount", [True, 1.5, INT64_MAX + 1])
def test_parse_money_rejects_non_int64_amounts(amount: Any) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_money("USD", amount, field="amount")
    assert [v.field for v in caught.value.violations] == ["amount.amount_minor"]


def test_parse_currency() -> None:
    assert parse_currency("JPY", field="currency_code") == "JPY"


@pytest.mark.parametrize(
    ("code", "description"),
    [
        ("", "required"),
        ("XYZ", "unknown currency 'XYZ'"),
        ("XAU", "unknown currency 'XAU'"),
    ],
)
def test_parse_currency_names_the_field(code: str, description: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_currency(code, field="currency_code")
    assert caught.value.violations == (FieldViolation("currency_code", description),)


def test_parse_currency_does_not_fix_case_silently() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_currency("eur", field="currency_code")
    (violation,) = caught.value.violations
    assert violation.field == "currency_code"
    assert "'EUR'" in violation.description
