"""Exchange rules: rate text, the rounding rule (wallet.proto GetQuote), quotes, the four legs."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet_server.domain import (
    CURRENCY_EXPONENTS,
    INT64_MAX,
    QUOTE_LIFETIME,
    Account,
    AccountKind,
    ExchangeRate,
    FailedPrecondition,
    InvalidArgument,
    Money,
    NotFound,
    Quote,
    Reason,
    check_quote_executable,
    convert_bought,
    convert_sold,
    exact_conversion,
    parse_rate,
    plan_exchange,
    price_quote,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def account(currency: str, posted: int = 0, **kw: Any) -> Account:
    kind = kw.pop("kind", AccountKind.USER)
    base = Account(
        account_id=uuid4(),
        kind=kind,
        currency=currency,
        owner_user_id=uuid4() if kind is AccountKind.USER else None,
        partner_id=None,
        posted=posted,
        pending_out=0,
        frozen=False,
        created_at=T0,
    )
    return replace(base, **kw)


def rate(from_currency: str, to_currency: str, text: str) -> ExchangeRate:
    return ExchangeRate(from_currency, to_currency, parse_rate(text), T0)


# --- the proto's own examples ---------------------------------------------------------------


def test_usd_to_jpy_rounds_down_to_whole_yen() -> None:
    # R = "151.37" USD->JPY: USD 1.00 (100) gives JPY 151.
    assert convert_sold(Money("USD", 100), "JPY", "151.37") == Money("JPY", 151)


def test_jpy_to_kwd_is_exact_to_the_fils() -> None:
    # R = "0.00203" JPY->KWD: JPY 1000 gives KWD 2.030 (2030).
    assert convert_sold(Money("JPY", 1000), "KWD", "0.00203") == Money("KWD", 2030)


def test_one_fils_to_usd_converts_to_zero_and_is_refused() -> None:
    # R = "3.2543" KWD->USD: KWD 0.001 is 0.32543 cents, rounded to zero.
    assert exact_conversion(Money("KWD", 1), "USD", "3.2543") == Fraction(32543, 100000)
    with pytest.raises(InvalidArgument) as caught:
        convert_sold(Money("KWD", 1), "USD", "3.2543")
    assert caught.value.reason == Reason.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == ["from_amount.amount_minor"]


# --- given the amount bought: the smallest amount sold ------------------------------------------


def test_buying_exactly_151_yen_costs_one_dollar_and_152_costs_a_cent_more() -> None:
    assert convert_bought(Money("JPY", 151), "USD", "151.37") == Money("USD", 100)
    assert convert_bought(Money("JPY", 152), "USD", "151.37") == Money("USD", 101)
    assert convert_sold(Money("USD", 101), "JPY", "151.37") == Money("JPY", 152)


def test_buying_an_exact_multiple_does_not_round_up() -> None:
    # 2030 / (0.00203 * 10^3) is exactly 1000; a float division would give 1000.0000000000001.
    assert convert_bought(Money("KWD", 2030), "JPY", "0.00203") == Money("JPY", 1000)


def test_buying_one_cent_with_fils_rounds_the_price_up() -> None:
    # 1 / 0.32543 = 3.07...: 3 fils buy only 0.976 cents, 4 fils buy 1.3 cents.
    assert convert_bought(Money("USD", 1), "KWD", "3.2543") == Money("KWD", 4)


def test_three_fils_buy_no_whole_cent() -> None:
    with pytest.raises(InvalidArgument):
        convert_sold(Money("KWD", 3), "USD", "3.2543")
    assert convert_sold(Money("KWD", 4), "USD", "3.2543") == Money("USD", 1)


# --- int64 overflow ---------------------------------------------------------------------------


def test_a_conversion_above_int64_is_refused_with_amount_overflow() -> None:
    with pytest.raises(InvalidArgument) as caught:
        convert_sold(Money("JPY", 10**16), "KWD", "1000")  # 10^16 * 1000 * 10^3
    assert caught.value.reason == Reason.AMOUNT_OVERFLOW
    assert [v.field for v in caught.value.violations] == ["from_amount.amount_minor"]

    with pytest.raises(InvalidArgument) as caught:
        convert_bought(Money("KWD", INT64_MAX), "JPY", "0.000000000001")
    assert caught.value.reason == Reason.AMOUNT_OVERFLOW
    assert [v.field for v in caught.value.violations] == ["to_amount.amount_minor"]


def test_int64_max_itself_still_converts_at_rate_one() -> None:
    assert convert_sold(Money("USD", INT64_MAX), "EUR", "1") == Money("EUR", INT64_MAX)
    assert convert_bought(Money("EUR", INT64_MAX), "USD", "1") == Money("USD", INT64_MAX)


# --- rate text --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("151.37", "151.37"),
        ("0151.370", "151.37"),
        ("1", "1"),
        ("1.000", "1"),
        ("0.00203", "0.00203"),
        ("0.000000000001", "0.000000000001"),
        ("999999999999.999999999999", "999999999999.999999999999"),
        ("000000000000000000001", "1"),
    ],
)
def test_rates_are_kept_in_canonical_text(text: str, canonical: str) -> None:
    assert parse_rate(text) == canonical


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "0.000",
        "-1",
        "+1",
        "1e3",
        "1E-3",
        "1.",
        ".5",
        " 1",
        "1 ",
        "1,5",
        "1_000",
        "1/3",
        "NaN",
        "inf",
        "١٢",  # Arabic-Indic digits: Fraction and int() would accept them
        "1.0000000000001",  # 13 fraction digits
        "1000000000000",  # 13 integer digits
        "0" * 40 + "1",  # too long
    ],
)
def test_bad_rate_text_is_refused_on_the_rate_field(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_rate(text)
    assert [v.field for v in caught.value.violations] == ["rate"]


# --- properties of the rounding rule ------------------------------------------------------------

CURRENCIES = ["JPY", "USD", "KWD", "CLF", "EUR", "BHD"]


@st.composite
def rates(draw: st.DrawFn) -> str:
    whole = draw(st.integers(min_value=0, max_value=10**6))
    digits = draw(st.integers(min_value=0, max_value=12))
    fraction = draw(st.integers(min_value=0, max_value=10**digits - 1)) if digits else 0
    text = f"{whole}.{fraction:0{digits}d}" if digits else str(whole)
    if Fraction(text) == 0:
        text = "0.000000000001"
    return text


pairs = st.tuples(st.sampled_from(CURRENCIES), st.sampled_from(CURRENCIES)).filter(
    lambda p: p[0] != p[1]
)
amounts = st.integers(min_value=1, max_value=10**15)


@given(pair=pairs, rate_text=rates(), sold=amounts)
def test_given_the_amount_sold_the_user_gets_the_exact_value_rounded_down(
    pair: tuple[str, str], rate_text: str, sold: int
) -> None:
    from_currency, to_currency = pair
    exact = (
        sold
        * Fraction(rate_text)
        * Fraction(10) ** (CURRENCY_EXPONENTS[to_currency] - CURRENCY_EXPONENTS[from_currency])
    )
    if exact < 1 or exact > INT64_MAX:
        with pytest.raises(InvalidArgument):
            convert_sold(Money(from_currency, sold), to_currency, rate_text)
        return
    bought = convert_sold(Money(from_currency, sold), to_currency, rate_text)
    assert bought.currency == to_currency
    # Never more than the exact value (the wallet's favour), by less than one minor unit.
    assert bought.amount_minor <= exact < bought.amount_minor + 1


@given(pair=pairs, rate_text=rates(), wanted=amounts)
def test_given_the_amount_bought_the_user_pays_the_smallest_sufficient_amount(
    pair: tuple[str, str], rate_text: str, wanted: int
) -> None:
    from_currency, to_currency = pair
    per_minor = Fraction(rate_text) * Fraction(10) ** (
        CURRENCY_EXPONENTS[to_currency] - CURRENCY_EXPONENTS[from_currency]
    )
    if math.ceil(wanted / per_minor) > INT64_MAX:
        with pytest.raises(InvalidArgument) as caught:
            convert_bought(Money(to_currency, wanted), from_currency, rate_text)
        assert caught.value.reason == Reason.AMOUNT_OVERFLOW
        return
    paid = convert_bought(Money(to_currency, wanted), from_currency, rate_text)
    assert paid.currency == from_currency
    assert paid.amount_minor >= 1
    # What is paid is worth at least what is bought (the wallet's favour)...
    assert exact_conversion(paid, to_currency, rate_text) >= wanted
    # ...and one minor unit less would not be.
    assert exact_conversion(Money(from_currency, paid.amount_minor - 1), to_currency, rate_text) < (
        wanted
    )


@given(pair=pairs, rate_text=rates(), sold=amounts)
def test_round_trips_through_floor_and_ceil_never_favour_the_user(
    pair: tuple[str, str], rate_text: str, sold: int
) -> None:
    from_currency, to_currency = pair
    try:
        bought = convert_sold(Money(from_currency, sold), to_currency, rate_text)
    except InvalidArgument:
        return
    # Asking for what a sale gave never costs more than that sale...
    price = convert_bought(bought, from_currency, rate_text)
    assert price.amount_minor <= sold
    # ...and selling that price gives at least what was asked, never more than its exact value.
    again = convert_sold(price, to_currency, rate_text)
    assert bought.amount_minor <= again.amount_minor
    assert again.amount_minor <= exact_conversion(price, to_currency, rate_text)
    assert math.floor(exact_conversion(price, to_currency, rate_text)) == again.amount_minor


# --- pricing a quote: which error comes first -----------------------------------------------


def test_price_quote_with_either_side_fixed() -> None:
    usd, jpy = account("USD"), account("JPY")
    usd_jpy = rate("USD", "JPY", "151.37")
    assert price_quote(
        source=usd, destination=jpy, rate=usd_jpy, from_amount=Money("USD", 100)
    ) == (Money("USD", 100), Money("JPY", 151))
    assert price_quote(source=usd, destination=jpy, rate=usd_jpy, to_amount=Money("JPY", 152)) == (
        Money("USD", 101),
        Money("JPY", 152),
    )


def test_price_quote_refusals() -> None:
    usd, usd2, jpy = account("USD"), account("USD"), account("JPY")
    usd_jpy = rate("USD", "JPY", "151.37")

    with pytest.raises(InvalidArgument) as same:
        price_quote(source=usd, destination=usd2, rate=None, from_amount=Money("USD", 1))
    assert [v.field for v in same.value.violations] == ["to_account_id"]

    with pytest.raises(InvalidArgument) as wrong_side:
        price_quote(source=usd, destination=jpy, rate=usd_jpy, from_amount=Money("JPY", 100))
    assert [v.field for v in wrong_side.value.violations] == ["from_amount.currency_code"]
    with pytest.raises(InvalidArgument) as wrong_side:
        price_quote(source=usd, destination=jpy, rate=usd_jpy, to_amount=Money("USD", 100))
    assert [v.field for v in wrong_side.value.violations] == ["to_amount.currency_code"]

    # A wrong currency is bad input whether or not a rate is set; a missing rate is a state.
    with pytest.raises(InvalidArgument):
        price_quote(source=usd, destination=jpy, rate=None, from_amount=Money("JPY", 100))
    with pytest.raises(FailedPrecondition) as no_rate:
        price_quote(source=usd, destination=jpy, rate=None, from_amount=Money("USD", 100))
    assert no_rate.value.reason == "FAILED_PRECONDITION"

    with pytest.raises(InvalidArgument) as zero:
        price_quote(source=usd, destination=jpy, rate=usd_jpy, from_amount=Money("USD", 0))
    assert zero.value.violations[0].field == "from_amount.amount_minor"


# --- executing a quote ------------------------------------------------------------------------


def quote(**kw: Any) -> Quote:
    base = Quote(
        quote_id=uuid4(),
        user_id=uuid4(),
        from_account_id=uuid4(),
        to_account_id=uuid4(),
        from_amount=Money("USD", 100),
        to_amount=Money("JPY", 151),
        rate="151.37",
        created_at=T0,
        expires_at=T0 + QUOTE_LIFETIME,
    )
    return replace(base, **kw)


def test_a_quote_expires_at_its_expiry_as_an_order_does() -> None:
    q = quote()
    just_before = q.expires_at - timedelta(microseconds=1)
    assert check_quote_executable(q, user_id=q.user_id, now=just_before) is q
    with pytest.raises(FailedPrecondition) as late:
        check_quote_executable(q, user_id=q.user_id, now=q.expires_at)
    assert late.value.reason == Reason.QUOTE_EXPIRED


def test_an_executed_quote_is_expired_and_a_foreign_quote_is_not_found() -> None:
    q = quote()
    with pytest.raises(FailedPrecondition) as used:
        check_quote_executable(replace(q, transaction_id=uuid4()), user_id=q.user_id, now=T0)
    assert used.value.reason == Reason.QUOTE_EXPIRED
    for found in (q, None):
        with pytest.raises(NotFound):
            check_quote_executable(found, user_id=uuid4(), now=T0)


def exchange_accounts(
    source_posted: int = 1_000, **source_kw: Any
) -> tuple[Quote, dict[Any, Account], Account, Account]:
    source = account("USD", source_posted, **source_kw)
    destination = account("JPY")
    from_pool = account("USD", kind=AccountKind.FX_POOL)
    to_pool = account("JPY", kind=AccountKind.FX_POOL)
    q = quote(from_account_id=source.account_id, to_account_id=destination.account_id)
    accounts = {a.account_id: a for a in (source, destination, from_pool, to_pool)}
    return q, accounts, from_pool, to_pool


def test_an_exchange_has_four_legs_balanced_per_currency() -> None:
    q, accounts, from_pool, to_pool = exchange_accounts()
    legs = plan_exchange(
        q, accounts, from_pool_id=from_pool.account_id, to_pool_id=to_pool.account_id
    )
    assert [(leg.account_id, leg.amount, leg.currency) for leg in legs] == [
        (q.from_account_id, -100, "USD"),
        (from_pool.account_id, 100, "USD"),
        (to_pool.account_id, -151, "JPY"),  # the pool may go negative
        (q.to_account_id, 151, "JPY"),
    ]


@pytest.mark.parametrize(
    ("source_kw", "frozen_destination", "reason"),
    [
        ({"source_posted": 99}, False, Reason.INSUFFICIENT_FUNDS),
        ({"source_posted": 1_000, "pending_out": 901}, False, Reason.INSUFFICIENT_FUNDS),
        ({"source_posted": 1_000, "frozen": True}, False, Reason.ACCOUNT_FROZEN),
        ({"source_posted": 1_000}, True, Reason.ACCOUNT_FROZEN),
        # A frozen destination is reported before missing funds.
        ({"source_posted": 0}, True, Reason.ACCOUNT_FROZEN),
    ],
)
def test_exchange_refusals(
    source_kw: dict[str, Any], frozen_destination: bool, reason: Reason
) -> None:
    q, accounts, from_pool, to_pool = exchange_accounts(**source_kw)
    if frozen_destination:
        accounts[q.to_account_id] = replace(accounts[q.to_account_id], frozen=True)
    with pytest.raises(FailedPrecondition) as caught:
        plan_exchange(q, accounts, from_pool_id=from_pool.account_id, to_pool_id=to_pool.account_id)
    assert caught.value.reason == reason


def test_exchange_that_would_overflow_the_destination_is_refused() -> None:
    q, accounts, from_pool, to_pool = exchange_accounts()
    accounts[q.to_account_id] = replace(accounts[q.to_account_id], posted=INT64_MAX - 150)
    with pytest.raises(FailedPrecondition) as caught:
        plan_exchange(q, accounts, from_pool_id=from_pool.account_id, to_pool_id=to_pool.account_id)
    assert caught.value.reason == Reason.AMOUNT_OVERFLOW
