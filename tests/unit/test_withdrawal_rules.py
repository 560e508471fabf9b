"""Pure withdrawal rules: destination validation, the hold, completion and failure."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet_server.domain import (
    Account,
    AccountKind,
    FailedPrecondition,
    InvalidArgument,
    Money,
    PayoutDestination,
    Reason,
    Transaction,
    TransactionKind,
    TransactionStatus,
    check_balanced,
    ensure_withdrawal_pending,
    is_valid_iban,
    new_withdrawal,
    parse_payout_destination,
    plan_withdrawal_completion,
    plan_withdrawal_failure,
    plan_withdrawal_hold,
    withdrawal_routed_to,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
VALID_IBANS = (
    "DE89370400440532013000",
    "GB82WEST12345698765432",
    "NL91ABNA0417164300",
    "FR1420041010050500013M02606",
)


def destination(**overrides: str) -> dict[str, str]:
    fields = {
        "holder_name": "Alice Example",
        "country_code": "DE",
        "bank_code": "",
        "account_number": "DE89 3704 0044 0532 0130 00",
    }
    fields.update(overrides)
    return fields


def violations(**overrides: str) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        parse_payout_destination(**destination(**overrides))
    return {v.field: v.description for v in caught.value.violations}


def account(posted: int = 10_000, pending_out: int = 0, **kw: Any) -> Account:
    base = Account(
        account_id=uuid4(),
        kind=AccountKind.USER,
        currency="USD",
        owner_user_id=uuid4(),
        partner_id=None,
        posted=posted,
        pending_out=pending_out,
        frozen=False,
        created_at=T0,
    )
    return replace(base, **kw)


def settlement_account(partner_id: UUID) -> Account:
    return replace(
        account(posted=0), kind=AccountKind.SETTLEMENT, owner_user_id=None, partner_id=partner_id
    )


def pending(source: Account, amount: int, partner_id: UUID, settlement: Account) -> Transaction:
    return new_withdrawal(
        transaction_id=uuid4(),
        account=source,
        settlement_account_id=settlement.account_id,
        partner_id=partner_id,
        amount=Money("USD", amount),
        now=T0,
    )


# --- destination ----------------------------------------------------------------------------


def test_an_iban_destination_is_canonicalised() -> None:
    parsed = parse_payout_destination(
        **destination(
            holder_name="  Alice Example ",
            country_code="de",
            account_number="de89-3704 0044 0532 0130 00",
        )
    )
    assert parsed == PayoutDestination(
        holder_name="Alice Example",
        country_code="DE",
        bank_code="",
        account_number="DE89370400440532013000",
    )


def test_a_domestic_account_number_with_a_bank_code_is_accepted() -> None:
    parsed = parse_payout_destination(
        holder_name="Bob Smith",
        country_code="US",
        bank_code="0210-00021",
        account_number="000123456789",
    )
    assert (parsed.country_code, parsed.bank_code, parsed.account_number) == (
        "US",
        "021000021",
        "000123456789",
    )


@pytest.mark.parametrize("iban", VALID_IBANS)
def test_known_good_ibans_validate(iban: str) -> None:
    assert is_valid_iban(iban)


def test_a_domestic_account_number_needs_a_bank_code() -> None:
    assert violations(country_code="US", account_number="123456789") == {
        "destination.bank_code": "required unless account_number is an IBAN"
    }


def test_an_iban_with_wrong_check_digits_is_refused() -> None:
    assert "destination.account_number" in violations(account_number="DE88370400440532013000")


def test_an_iban_of_another_country_is_refused() -> None:
    assert violations(country_code="FR") == {
        "destination.account_number": "an IBAN of DE, not of country_code FR"
    }


@pytest.mark.parametrize("code", ["", "XX", "D", "DEU", "Germany", "D1", "ÄÖ"])
def test_country_code_must_be_an_assigned_alpha2_code(code: str) -> None:
    assert "destination.country_code" in violations(country_code=code)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "required"),
        ("   ", "required"),
        ("A" * 141, "at most 140 characters"),
        ("Alice\nExample", "must not contain control characters"),
        ("12345", "must contain letters"),
    ],
)
def test_holder_name_rules(name: str, problem: str) -> None:
    assert violations(holder_name=name) == {"destination.holder_name": problem}


def test_a_long_holder_name_at_the_limit_is_fine() -> None:
    assert parse_payout_destination(**destination(holder_name="Ä" * 140)).holder_name == "Ä" * 140


@pytest.mark.parametrize(
    "number",
    ["", "123", "1" * 35, "1234!5678", "12345678\u0663", "\uff11\uff12\uff13\uff14\uff15\uff16"],
)
def test_account_number_length_and_charset(number: str) -> None:
    assert "destination.account_number" in violations(
        country_code="US", bank_code="021000021", account_number=number
    )


@pytest.mark.parametrize("code", ["A" * 36, "BIC/123", "ÄBCDEF"])
def test_bank_code_length_and_charset(code: str) -> None:
    assert "destination.bank_code" in violations(
        country_code="US", bank_code=code, account_number="123456789"
    )


def test_every_bad_field_is_reported_at_once_under_its_own_name() -> None:
    found = violations(holder_name="", country_code="ZZ", account_number="!")
    assert set(found) == {
        "destination.holder_name",
        "destination.country_code",
        "destination.account_number",
    }


def test_the_destination_repr_does_not_show_account_details() -> None:
    parsed = parse_payout_destination(**destination())
    shown = repr(parsed) + str(parsed)
    assert "0532013000" not in shown
    assert "Alice" not in shown


@given(
    iban=st.sampled_from(VALID_IBANS),
    position=st.integers(min_value=0),
    replacement=st.integers(min_value=1, max_value=35),
)
def test_any_single_changed_character_breaks_the_iban_check(
    iban: str, position: int, replacement: int
) -> None:
    i = position % len(iban)
    old = iban[i]
    # Same class of character (digit for digit, letter for letter), so the shape still fits.
    alphabet = "0123456789" if old.isdigit() else "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    new = alphabet[(alphabet.index(old) + replacement) % len(alphabet)]
    if new == old:
        return
    assert not is_valid_iban(iban[:i] + new + iban[i + 1 :])


# --- the hold -------------------------------------------------------------------------------


def test_the_hold_is_the_amount_on_the_source_account() -> None:
    source = account(posted=10_000, pending_out=2_000)
    assert plan_withdrawal_hold(source, Money("USD", 8_000)) == {source.account_id: 8_000}


def test_a_hold_above_the_available_balance_is_refused() -> None:
    source = account(posted=10_000, pending_out=2_000)
    with pytest.raises(FailedPrecondition) as caught:
        plan_withdrawal_hold(source, Money("USD", 8_001))
    assert caught.value.reason == Reason.INSUFFICIENT_FUNDS


def test_refusals_come_in_a_fixed_order_frozen_then_currency_then_funds() -> None:
    broke_frozen = account(posted=0, frozen=True)
    with pytest.raises(FailedPrecondition) as caught:
        plan_withdrawal_hold(broke_frozen, Money("EUR", 1))
    assert caught.value.reason == Reason.ACCOUNT_FROZEN
    with pytest.raises(FailedPrecondition) as caught:
        plan_withdrawal_hold(account(posted=0), Money("EUR", 1))
    assert caught.value.reason == Reason.CURRENCY_MISMATCH


def test_only_user_accounts_are_withdrawn_from() -> None:
    with pytest.raises(ValueError, match="user accounts"):
        plan_withdrawal_hold(settlement_account(uuid4()), Money("USD", 1))


def test_a_new_withdrawal_is_pending_with_no_postings_and_routed() -> None:
    partner = uuid4()
    source, settlement = account(), settlement_account(partner)
    tx = pending(source, 500, partner, settlement)
    assert tx.kind is TransactionKind.WITHDRAWAL
    assert tx.status is TransactionStatus.PENDING
    assert tx.postings == ()
    assert tx.posted_at is None
    assert (tx.from_account_id, tx.to_account_id) == (source.account_id, settlement.account_id)
    assert withdrawal_routed_to(tx, partner)
    assert not withdrawal_routed_to(tx, uuid4())
    assert not withdrawal_routed_to(replace(tx, kind=TransactionKind.DEPOSIT), partner)


# --- completion and failure -----------------------------------------------------------------


@given(
    posted=st.integers(min_value=1, max_value=10**12),
    other_holds=st.integers(min_value=0, max_value=10**12),
    data=st.data(),
)
def test_hold_then_complete_or_fail_keeps_the_books(
    posted: int, other_holds: int, data: st.DataObject
) -> None:
    """Model: the hold lowers available only; completion lowers posted and releases the hold
    (available stays as after the hold); failure only releases the hold."""
    total = posted + other_holds
    source = account(posted=total, pending_out=other_holds)
    amount = data.draw(st.integers(min_value=1, max_value=posted))
    partner = uuid4()
    settlement = settlement_account(partner)
    holds = plan_withdrawal_hold(source, Money("USD", amount))
    held = replace(source, pending_out=source.pending_out + holds[source.account_id])
    assert held.posted == source.posted
    assert held.available == source.available - amount
    tx = pending(source, amount, partner, settlement)

    completed = data.draw(st.booleans())
    if completed:
        plan = plan_withdrawal_completion(
            tx, source=held, settlement=settlement, external_reference="bank-1", now=T0
        )
        check_balanced(plan.legs)
        legs = {leg.account_id: leg.amount for leg in plan.legs}
        assert legs == {source.account_id: -amount, settlement.account_id: amount}
        after_posted = held.posted + legs[source.account_id]
    else:
        plan = plan_withdrawal_failure(tx, source=held, failure_message="account closed")
        assert plan.legs == ()
        after_posted = held.posted
    after_pending = held.pending_out + plan.holds[source.account_id]
    assert after_pending == other_holds
    # Completed: the held money is gone. Failed: everything is back as before the request.
    assert after_posted - after_pending == (held.available if completed else source.available)


def test_completion_posts_with_the_partners_reference() -> None:
    partner = uuid4()
    source, settlement = account(posted=1_000, pending_out=1_000), settlement_account(partner)
    tx = pending(source, 1_000, partner, settlement)
    later = T0 + timedelta(hours=1)
    done = plan_withdrawal_completion(
        tx, source=source, settlement=settlement, external_reference="wire-42", now=later
    ).transaction
    assert done.status is TransactionStatus.POSTED
    assert done.posted_at == later
    assert done.created_at == T0
    assert done.external_reference == "wire-42"
    assert done.postings != ()


def test_a_frozen_source_can_still_be_completed_or_failed() -> None:
    partner = uuid4()
    source = account(posted=1_000, pending_out=1_000, frozen=True)
    settlement = settlement_account(partner)
    tx = pending(replace(source, frozen=False), 1_000, partner, settlement)
    plan_withdrawal_completion(
        tx, source=source, settlement=settlement, external_reference="", now=T0
    )
    plan_withdrawal_failure(tx, source=source, failure_message="")


def test_failure_voids_with_the_message_and_moves_nothing() -> None:
    partner = uuid4()
    source, settlement = account(posted=1_000, pending_out=300), settlement_account(partner)
    tx = pending(source, 300, partner, settlement)
    plan = plan_withdrawal_failure(tx, source=source, failure_message="account closed")
    assert plan.transaction.status is TransactionStatus.VOIDED
    assert plan.transaction.status_message == "account closed"
    assert plan.transaction.posted_at is None
    assert plan.transaction.postings == ()
    assert plan.holds == {source.account_id: -300}


@pytest.mark.parametrize(
    "status",
    [
        TransactionStatus.POSTED,
        TransactionStatus.VOIDED,
        TransactionStatus.HELD_FOR_REVIEW,
        TransactionStatus.REJECTED,
    ],
)
def test_only_a_pending_withdrawal_can_be_completed_or_failed(status: TransactionStatus) -> None:
    partner = uuid4()
    source, settlement = account(posted=1_000, pending_out=1_000), settlement_account(partner)
    tx = replace(pending(source, 1_000, partner, settlement), status=status)
    for attempt in (
        lambda: ensure_withdrawal_pending(tx),
        lambda: plan_withdrawal_completion(
            tx, source=source, settlement=settlement, external_reference="", now=T0
        ),
        lambda: plan_withdrawal_failure(tx, source=source, failure_message=""),
    ):
        with pytest.raises(FailedPrecondition) as caught:
            attempt()
        assert caught.value.reason == "FAILED_PRECONDITION"
        assert status.value.upper() in caught.value.message


def test_a_withdrawal_whose_hold_is_missing_is_an_internal_fault() -> None:
    partner = uuid4()
    source, settlement = account(posted=1_000, pending_out=0), settlement_account(partner)
    tx = pending(source, 500, partner, settlement)
    with pytest.raises(RuntimeError, match="no matching hold"):
        plan_withdrawal_failure(tx, source=source, failure_message="")
    with pytest.raises(RuntimeError, match="no matching hold"):
        plan_withdrawal_completion(
            tx, source=source, settlement=settlement, external_reference="", now=T0
        )
