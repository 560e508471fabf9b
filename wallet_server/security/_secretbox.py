"""Authenticated encryption of small secrets at rest (AES-256-GCM with rotatable key ids).

A sealed blob is self-describing::

    version (1 byte) | key id length (1 byte) | key id (utf-8) | nonce (12 bytes) | ciphertext+tag

The header (version and key id) is authenticated along with the caller's associated data, so
no part of the blob can be altered without ``open`` failing.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = 1
_KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_MAX_KEY_ID_BYTES = 255


class SecretBoxError(Exception):
    """A sealed blob could not be opened: tampered, malformed, or sealed under an unknown key."""


class SecretBox:
    """Seals with the active key; opens with whichever configured key the blob names."""

    __slots__ = ("_active_key_id", "_ciphers", "_digest_key")

    def __init__(self, keys: Mapping[str, bytes], active_key_id: str) -> None:
        if not keys:
            raise ValueError("at least one secret box key is required")
        for key_id, key in keys.items():
            _validate_key(key_id, key)
        if active_key_id not in keys:
            raise ValueError(
                f"active secret box key id {active_key_id!r} is not among the configured keys"
            )
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._active_key_id = active_key_id
        # A separate key for digests, derived so it never doubles as an encryption key.
        self._digest_key = hmac.new(keys[active_key_id], b"wallet digest key", "sha256").digest()

    @property
    def active_key_id(self) -> str:
        return self._active_key_id

    def digest(self, data: bytes) -> bytes:
        """A keyed digest of a secret: compares equal for equal input, reveals nothing to
        someone holding only the database (unlike a plain hash of a short bank number)."""
        return hmac.new(self._digest_key, data, "sha256").digest()

    def seal(self, plaintext: bytes, *, associated_data: bytes) -> bytes:
        """Encrypts ``plaintext``, bound to ``associated_data`` (e.g. the owning row's id)."""
        header = _header(self._active_key_id)
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = self._ciphers[self._active_key_id].encrypt(
            nonce, plaintext, header + associated_data
        )
        return header + nonce + ciphertext

    def open(self, blob: bytes, *, associated_data: bytes) -> bytes:
        """The plaintext of a sealed blob; ``SecretBoxError`` if it cannot be authenticated."""
        key_id, header_length = _parse_header(blob)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise SecretBoxError(f"sealed with unknown key id {key_id!r}")
        header = blob[:header_length]
        nonce = blob[header_length : header_length + _NONCE_BYTES]
        ciphertext = blob[header_length + _NONCE_BYTES :]
        try:
            return cipher.decrypt(nonce, ciphertext, header + associated_data)
        except InvalidTag:
            raise SecretBoxError("sealed blob failed authentication") from None

    def needs_reseal(self, blob: bytes) -> bool:
        """Whether the blob was sealed under a key other than the active one."""
        key_id, _ = _parse_header(blob)
        return key_id != self._active_key_id

    def __repr__(self) -> str:
        return (
            f"SecretBox(key_ids={sorted(self._ciphers)!r}, active_key_id={self._active_key_id!r})"
        )


def _validate_key(key_id: str, key: bytes) -> None:
    if not isinstance(key_id, str) or not key_id:
        raise ValueError("secret box key ids must be non-empty strings")
    if len(key_id.encode("utf-8")) > _MAX_KEY_ID_BYTES:
        raise ValueError(f"secret box key id {key_id!r} is longer than {_MAX_KEY_ID_BYTES} bytes")
    if not isinstance(key, bytes) or len(key) != _KEY_BYTES:
        raise ValueError(f"secret box key {key_id!r} must be exactly {_KEY_BYTES} bytes")


def _header(key_id: str) -> bytes:
    encoded = key_id.encode("utf-8")
    return bytes((_VERSION, len(encoded))) + encoded


def _parse_header(blob: bytes) -> tuple[str, int]:
    """The key id named by the blob and the length of its header."""
    if len(blob) < 2:
        raise SecretBoxError("sealed blob is truncated")
    if blob[0] != _VERSION:
        raise SecretBoxError(f"unsupported sealed blob version {blob[0]}")
    header_length = 2 + blob[1]
    if blob[1] == 0 or len(blob) < header_length + _NONCE_BYTES + _TAG_BYTES:
        raise SecretBoxError("sealed blob is truncated or malformed")
    try:
        key_id = blob[2:header_length].decode("utf-8")
    except UnicodeDecodeError:
        raise SecretBoxError("sealed blob has a malformed key id") from None
    return key_id, header_length
