"""Per-caller limits on calls that hold memory while open (streams, waiting batches)."""

from __future__ import annotations

import pytest

from wallet_server.domain import RateLimited, Reason
from wallet_server.services import BatchSlots, CallerLimit, UnitOfWork


def test_a_caller_gets_only_so_many_places_and_others_are_not_affected() -> None:
    limit = CallerLimit(2, "batches")
    with limit.hold("partner:a"), limit.hold("partner:a"):
        with pytest.raises(RateLimited) as refused, limit.hold("partner:a"):
            pass
        with limit.hold("partner:b"):
            pass
    assert refused.value.reason == Reason.RATE_LIMITED
    assert refused.value.status_name == "RESOURCE_EXHAUSTED"
    assert "at most 2 batches per caller" in refused.value.message


def test_a_place_comes_back_when_its_call_ends_however_it_ends() -> None:
    limit = CallerLimit(1, "streams")
    with pytest.raises(LookupError), limit.hold("user:a"):
        raise LookupError
    with limit.hold("user:a"):  # the failed call gave its place back
        pass
    with limit.hold("user:a"):
        pass


def test_batches_are_admitted_per_partner() -> None:
    def no_database() -> UnitOfWork:
        raise AssertionError("admitting a batch touches no database")

    slots = BatchSlots(no_database, max_per_caller=1)
    with slots.admit("partner:a"):
        with pytest.raises(RateLimited), slots.admit("partner:a"):
            pass
        with slots.admit("partner:b"):
            pass
    with slots.admit("partner:a"):
        pass
