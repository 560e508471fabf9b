from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet_server.domain import Reason, Unauthenticated
from wallet_server.security import (
    AccessTokenCodec,
    hash_refresh_token,
    new_refresh_token,
)

KEY_1 = os.urandom(32)
KEY_2 = os.urandom(32)
TTL = timedelta(minutes=15)
START = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
USER = uuid.UUID("8d5a3c1e-95b0-4c1e-9f6f-6c0e8a3f2b11")
SESSION = uuid.UUID("0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0")


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def codec(clock: FakeClock) -> AccessTokenCodec:
    return AccessTokenCodec({"k1": KEY_1}, "k1", TTL, clock=clock)


def valid_claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": str(USER),
        "sid": str(SESSION),
        "iat": int(START.timestamp()),
        "exp": int((START + TTL).timestamp()),
        "iss": "wallet-server",
        "typ": "access",
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def sign(claims: dict[str, Any], *, key: bytes = KEY_1, kid: str = "k1", alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def assert_invalid(codec: AccessTokenCodec, token: str) -> None:
    with pytest.raises(Unauthenticated) as raised:
        codec.verify(token)
    assert raised.value.reason == Reason.TOKEN_INVALID


def b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_an_issued_token_verifies_to_its_claims(codec: AccessTokenCodec) -> None:
    issued = codec.issue(USER, SESSION)

    claims = codec.verify(issued.token)

    assert claims.user_id == USER
    assert claims.session_id == SESSION
    assert claims.expires_at == START + TTL == issued.expires_at


def test_the_token_carries_the_documented_claims_and_key_id(codec: AccessTokenCodec) -> None:
    token = codec.issue(USER, SESSION).token

    assert jwt.get_unverified_header(token) == {"alg": "HS256", "kid": "k1", "typ": "JWT"}
    assert jwt.decode(token, options={"verify_signature": False}) == valid_claims()


def test_a_token_is_valid_until_one_second_before_expiry(
    codec: AccessTokenCodec, clock: FakeClock
) -> None:
    issued = codec.issue(USER, SESSION)

    clock.now = issued.expires_at - timedelta(seconds=1)

    assert codec.verify(issued.token).user_id == USER


@pytest.mark.parametrize("after_expiry", [timedelta(0), timedelta(seconds=1), timedelta(days=3)])
def test_a_token_is_expired_from_its_expiry_on(
    codec: AccessTokenCodec, clock: FakeClock, after_expiry: timedelta
) -> None:
    issued = codec.issue(USER, SESSION)

    clock.now = issued.expires_at + after_expiry

    with pytest.raises(Unauthenticated) as raised:
        codec.verify(issued.token)
    assert raised.value.reason == Reason.TOKEN_EXPIRED


@pytest.mark.parametrize(
    "moment", [datetime(2001, 1, 1, tzinfo=UTC), datetime(2101, 1, 1, tzinfo=UTC)]
)
def test_only_the_injected_clock_decides_validity(clock: FakeClock, moment: datetime) -> None:
    # Issued long ago or far in the future by wall-clock standards; valid by our clock.
    clock.now = moment
    codec = AccessTokenCodec({"k1": KEY_1}, "k1", TTL, clock=clock)

    assert codec.verify(codec.issue(USER, SESSION).token).session_id == SESSION


def test_subsecond_clock_times_still_give_whole_second_expiry(clock: FakeClock) -> None:
    clock.now = START + timedelta(microseconds=999_999)
    codec = AccessTokenCodec({"k1": KEY_1}, "k1", TTL, clock=clock)

    issued = codec.issue(USER, SESSION)

    assert issued.expires_at == START + TTL
    assert codec.verify(issued.token).expires_at == issued.expires_at


def test_a_token_verified_before_still_expires(codec: AccessTokenCodec, clock: FakeClock) -> None:
    # The second check of the same token skips the signature, never the expiry.
    issued = codec.issue(USER, SESSION)
    assert codec.verify(issued.token).user_id == USER

    clock.now = issued.expires_at

    with pytest.raises(Unauthenticated) as raised:
        codec.verify(issued.token)
    assert raised.value.reason == Reason.TOKEN_EXPIRED


def test_a_changed_token_is_invalid_after_the_original_was_verified(
    codec: AccessTokenCodec,
) -> None:
    token = codec.issue(USER, SESSION).token
    codec.verify(token)
    header, payload, signature = token.split(".")
    forged = ".".join(
        [header, payload, signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")]
    )

    assert_invalid(codec, forged)


@pytest.mark.parametrize("segment", [0, 1, 2])
def test_a_changed_character_in_any_segment_is_invalid(
    codec: AccessTokenCodec, segment: int
) -> None:
    parts = codec.issue(USER, SESSION).token.split(".")
    middle = len(parts[segment]) // 2
    original = parts[segment][middle]
    parts[segment] = (
        parts[segment][:middle] + ("A" if original != "A" else "B") + parts[segment][middle + 1 :]
    )

    assert_invalid(codec, ".".join(parts))


def test_a_rewritten_payload_with_the_old_signature_is_invalid(codec: AccessTokenCodec) -> None:
    header, payload, signature = codec.issue(USER, SESSION).token.split(".")
    claims = json.loads(b64decode(payload))
    claims["sub"] = str(uuid.uuid4())

    assert_invalid(codec, f"{header}.{b64encode(json.dumps(claims).encode())}.{signature}")


def test_a_token_signed_with_another_key_under_our_key_id_is_invalid(
    codec: AccessTokenCodec,
) -> None:
    assert_invalid(codec, sign(valid_claims(), key=KEY_2, kid="k1"))


def test_an_unknown_key_id_is_invalid(codec: AccessTokenCodec) -> None:
    assert_invalid(codec, sign(valid_claims(), key=KEY_1, kid="k9"))


def test_a_missing_key_id_is_invalid(codec: AccessTokenCodec) -> None:
    assert_invalid(codec, jwt.encode(valid_claims(), KEY_1, algorithm="HS256"))


def test_a_non_string_key_id_is_invalid(codec: AccessTokenCodec) -> None:
    header = b64encode(json.dumps({"alg": "HS256", "kid": ["k1"], "typ": "JWT"}).encode())
    _, payload, signature = sign(valid_claims()).split(".")

    assert_invalid(codec, f"{header}.{payload}.{signature}")


def test_tokens_from_a_retired_key_verify_while_it_is_still_configured(clock: FakeClock) -> None:
    before_rotation = AccessTokenCodec({"k1": KEY_1}, "k1", TTL, clock=clock)
    during_rotation = AccessTokenCodec({"k1": KEY_1, "k2": KEY_2}, "k2", TTL, clock=clock)
    after_rotation = AccessTokenCodec({"k2": KEY_2}, "k2", TTL, clock=clock)
    old_token = before_rotation.issue(USER, SESSION).token
    new_token = during_rotation.issue(USER, SESSION).token

    assert during_rotation.verify(old_token).user_id == USER
    assert jwt.get_unverified_header(new_token)["kid"] == "k2"
    assert after_rotation.verify(new_token).user_id == USER
    assert_invalid(after_rotation, old_token)


def test_the_none_algorithm_is_refused(codec: AccessTokenCodec) -> None:
    unsigned = jwt.encode(valid_claims(), "", algorithm="none", headers={"kid": "k1"})

    assert_invalid(codec, unsigned)
    assert_invalid(codec, unsigned.rstrip(".") + ".")


def test_other_hmac_algorithms_are_refused(clock: FakeClock) -> None:
    long_key = os.urandom(64)
    codec = AccessTokenCodec({"k1": long_key}, "k1", TTL, clock=clock)

    assert_invalid(codec, sign(valid_claims(), key=long_key, alg="HS512"))
    assert codec.verify(sign(valid_claims(), key=long_key)).user_id == USER


@pytest.mark.parametrize(
    "claims",
    [
        valid_claims(typ="refresh"),
        valid_claims(typ=None),
        valid_claims(iss="someone-else"),
        valid_claims(iss=None),
        valid_claims(sub=None),
        valid_claims(sid=None),
        valid_claims(iat=None),
        valid_claims(exp=None),
        valid_claims(sub="not-a-uuid"),
        valid_claims(sid=12345),
        valid_claims(exp="1999999999"),
        valid_claims(exp=True),
        valid_claims(exp=10**30),
        valid_claims(exp=(START + TTL).timestamp() + 0.5),
        valid_claims(iat="yesterday"),
    ],
    ids=lambda claims: json.dumps(claims, sort_keys=True)[:80],
)
def test_tokens_with_wrong_or_missing_claims_are_invalid(
    codec: AccessTokenCodec, claims: dict[str, Any]
) -> None:
    assert_invalid(codec, sign(claims))


def test_the_well_formed_control_token_is_valid(codec: AccessTokenCodec) -> None:
    # Guards the test above: its tokens differ from a valid one only in the named claim.
    assert codec.verify(sign(valid_claims())).user_id == USER


@pytest.mark.parametrize(
    "token", ["", "abc", "a.b.c", "..", "a.b", "Bearer x.y.z", "é.é.é", "x" * 5000]
)
def test_malformed_tokens_are_invalid(codec: AccessTokenCodec, token: str) -> None:
    assert_invalid(codec, token)


@given(st.text(max_size=400))
def test_arbitrary_text_is_invalid_and_never_crashes(token: str) -> None:
    codec = AccessTokenCodec({"k1": KEY_1}, "k1", TTL, clock=FakeClock(START))

    assert_invalid(codec, token)


ASCII_TEXT = st.text(alphabet=st.characters(codec="ascii"), max_size=60)


@given(st.lists(ASCII_TEXT, min_size=3, max_size=3))
def test_arbitrary_three_part_text_is_invalid(parts: list[str]) -> None:
    codec = AccessTokenCodec({"k1": KEY_1}, "k1", TTL, clock=FakeClock(START))
    header = codec.issue(USER, SESSION).token.split(".")[0]

    assert_invalid(codec, ".".join(parts))
    assert_invalid(codec, ".".join([header, *parts[1:]]))


@pytest.mark.parametrize(
    ("keys", "active", "ttl", "message"),
    [
        ({}, "k1", TTL, "at least one"),
        ({"k1": KEY_1}, "k2", TTL, "'k2' is not among"),
        ({"k1": b"x" * 31}, "k1", TTL, "shorter than 32 bytes"),
        ({"k1": KEY_1, "": KEY_2}, "k1", TTL, "non-empty"),
        ({"k1": KEY_1.hex()}, "k1", TTL, "must be bytes"),
        ({"k1": KEY_1}, "k1", timedelta(0), "ttl"),
        ({"k1": KEY_1}, "k1", timedelta(seconds=-5), "ttl"),
        ({"k1": KEY_1}, "k1", timedelta(milliseconds=500), "ttl"),
    ],
)
def test_bad_configuration_is_refused(
    keys: dict[str, Any], active: str, ttl: timedelta, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        AccessTokenCodec(keys, active, ttl)
    assert KEY_1.hex() not in str(raised.value)


def test_a_naive_clock_is_refused() -> None:
    codec = AccessTokenCodec({"k1": KEY_1}, "k1", TTL, clock=lambda: datetime(2030, 1, 1))

    with pytest.raises(ValueError, match="timezone-aware"):
        codec.issue(USER, SESSION)


def test_default_clock_issues_tokens_valid_now() -> None:
    codec = AccessTokenCodec({"k1": KEY_1}, "k1", TTL)
    issued = codec.issue(USER, SESSION)

    assert codec.verify(issued.token).user_id == USER
    assert datetime.now(UTC) < issued.expires_at <= datetime.now(UTC) + TTL


def test_reprs_reveal_no_keys_or_tokens(codec: AccessTokenCodec) -> None:
    issued = codec.issue(USER, SESSION)

    for text in (repr(codec), str(codec), repr(issued)):
        assert KEY_1.hex() not in text
        assert repr(KEY_1) not in text
        assert issued.token not in text
    assert "k1" in repr(codec)


def test_refresh_tokens_are_random_and_url_safe() -> None:
    tokens = {new_refresh_token() for _ in range(100)}

    assert len(tokens) == 100
    for token in tokens:
        assert len(token) >= 43
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_refresh_tokens_are_stored_as_sha256() -> None:
    token = new_refresh_token()

    assert hash_refresh_token(token) == hashlib.sha256(token.encode()).digest()
    assert hash_refresh_token(token) == hash_refresh_token(token)
    assert hash_refresh_token(token) != hash_refresh_token(new_refresh_token())
    assert len(hash_refresh_token(token)) == 32
