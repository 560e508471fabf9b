from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest

from wallet_server.security import SecretBox, SecretBoxError

OLD_KEY = os.urandom(32)
NEW_KEY = os.urandom(32)
ROW = b"user:8d5a3c1e-95b0-4c1e-9f6f-6c0e8a3f2b11"
SECRET = b"JBSWY3DPEHPK3PXP"


@pytest.fixture
def box() -> SecretBox:
    return SecretBox({"k1": OLD_KEY}, "k1")


def test_a_sealed_secret_opens_to_the_plaintext(box: SecretBox) -> None:
    blob = box.seal(SECRET, associated_data=ROW)

    assert box.open(blob, associated_data=ROW) == SECRET
    assert SECRET not in blob


@pytest.mark.parametrize("plaintext", [b"", b"\x00", os.urandom(10_000)])
def test_any_plaintext_round_trips(box: SecretBox, plaintext: bytes) -> None:
    assert box.open(box.seal(plaintext, associated_data=b""), associated_data=b"") == plaintext


def test_each_seal_uses_a_fresh_nonce(box: SecretBox) -> None:
    first = box.seal(SECRET, associated_data=ROW)
    second = box.seal(SECRET, associated_data=ROW)

    assert first != second
    assert first[4:16] != second[4:16]  # the nonce, after the 4-byte header for "k1"


def test_the_blob_names_its_format_version_and_key(box: SecretBox) -> None:
    blob = box.seal(SECRET, associated_data=ROW)

    assert blob[:4] == b"\x01\x02k1"
    assert len(blob) == 4 + 12 + len(SECRET) + 16


def test_changing_any_bit_of_the_blob_is_detected(box: SecretBox) -> None:
    blob = box.seal(SECRET, associated_data=ROW)

    for index in range(len(blob)):
        for bit in (0x01, 0x80):
            tampered = bytearray(blob)
            tampered[index] ^= bit
            with pytest.raises(SecretBoxError):
                box.open(bytes(tampered), associated_data=ROW)


def test_a_truncated_or_extended_blob_is_detected(box: SecretBox) -> None:
    blob = box.seal(SECRET, associated_data=ROW)

    for length in range(len(blob)):
        with pytest.raises(SecretBoxError):
            box.open(blob[:length], associated_data=ROW)
    with pytest.raises(SecretBoxError):
        box.open(blob + b"\x00", associated_data=ROW)


@pytest.mark.parametrize("other_data", [b"", ROW + b"x", ROW[:-1], b"user:someone-else"])
def test_other_associated_data_is_refused(box: SecretBox, other_data: bytes) -> None:
    blob = box.seal(SECRET, associated_data=ROW)

    with pytest.raises(SecretBoxError):
        box.open(blob, associated_data=other_data)


def test_a_different_key_under_the_same_id_is_refused(box: SecretBox) -> None:
    impostor = SecretBox({"k1": NEW_KEY}, "k1")

    with pytest.raises(SecretBoxError, match="authentication"):
        impostor.open(box.seal(SECRET, associated_data=ROW), associated_data=ROW)


def test_rotated_keys_still_open_old_blobs() -> None:
    before = SecretBox({"old": OLD_KEY}, "old")
    during = SecretBox({"old": OLD_KEY, "new": NEW_KEY}, "new")
    after = SecretBox({"new": NEW_KEY}, "new")
    old_blob = before.seal(SECRET, associated_data=ROW)
    new_blob = during.seal(SECRET, associated_data=ROW)

    assert during.open(old_blob, associated_data=ROW) == SECRET
    assert new_blob[2:5] == b"new"
    assert after.open(new_blob, associated_data=ROW) == SECRET
    assert during.needs_reseal(old_blob)
    assert not during.needs_reseal(new_blob)
    with pytest.raises(SecretBoxError, match="unknown key id 'old'"):
        after.open(old_blob, associated_data=ROW)


def test_a_blob_moved_to_another_key_id_is_refused() -> None:
    # Both ids hold the same key: only the authenticated header tells the blobs apart.
    box = SecretBox({"a1": OLD_KEY, "b1": OLD_KEY}, "a1")
    blob = box.seal(SECRET, associated_data=ROW)

    with pytest.raises(SecretBoxError):
        box.open(blob[:2] + b"b1" + blob[4:], associated_data=ROW)


def test_non_ascii_key_ids_work() -> None:
    box = SecretBox({"clé-2026": NEW_KEY}, "clé-2026")

    assert box.open(box.seal(SECRET, associated_data=ROW), associated_data=ROW) == SECRET


@pytest.mark.parametrize(
    ("keys", "active", "message"),
    [
        ({}, "k1", "at least one"),
        ({"k1": OLD_KEY}, "k2", "'k2' is not among"),
        ({"k1": OLD_KEY[:16]}, "k1", "exactly 32 bytes"),
        ({"k1": OLD_KEY + b"x"}, "k1", "exactly 32 bytes"),
        ({"k1": OLD_KEY.hex()}, "k1", "exactly 32 bytes"),
        ({"": OLD_KEY}, "", "non-empty"),
        ({"k" * 256: OLD_KEY}, "k" * 256, "longer than 255 bytes"),
    ],
)
def test_bad_configuration_is_refused(keys: dict[str, Any], active: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        SecretBox(keys, active)
    assert OLD_KEY.hex() not in str(raised.value)


def test_repr_reveals_no_key_material(box: SecretBox) -> None:
    text = repr(box)

    assert text == "SecretBox(key_ids=['k1'], active_key_id='k1')"


def test_digest_is_keyed_and_deterministic() -> None:
    box = SecretBox({"a": b"a" * 32}, "a")
    other = SecretBox({"b": b"b" * 32}, "b")
    number = b"DE89370400440532013000"
    assert box.digest(number) == box.digest(number)
    assert box.digest(number) != box.digest(number + b"1")
    assert box.digest(number) != other.digest(number)
    assert box.digest(number) != hashlib.sha256(number).digest()
