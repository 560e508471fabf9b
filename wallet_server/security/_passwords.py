"""Password hashing with argon2id."""

from __future__ import annotations

import secrets

import argon2
from argon2.exceptions import InvalidHashError, VerificationError


def _encode(password: str) -> bytes:
    # "surrogatepass" so that no string makes hashing or verifying raise.
    return password.encode("utf-8", "surrogatepass")


class PasswordHasher:
    """Hashes and checks passwords; a wrong password or a bad hash is ``False``, never an error.

    Hashing is CPU- and memory-bound (tens of milliseconds with the defaults); from async code,
    call it in a worker thread (argon2 releases the GIL).
    """

    __slots__ = ("_argon2", "_dummy_hash")

    def __init__(
        self, *, time_cost: int = 3, memory_cost_kib: int = 65536, parallelism: int = 1
    ) -> None:
        if time_cost < 1:
            raise ValueError("argon2 time_cost must be at least 1")
        if parallelism < 1:
            raise ValueError("argon2 parallelism must be at least 1")
        if memory_cost_kib < 8 * parallelism:
            raise ValueError("argon2 memory_cost_kib must be at least 8 x parallelism")
        self._argon2 = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost_kib,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        # Verified against when the user does not exist, so that an unknown username costs
        # the same time as a wrong password and cannot be told apart by timing.
        self._dummy_hash = self._argon2.hash(_encode(secrets.token_urlsafe(16)))

    @classmethod
    def for_tests(cls) -> PasswordHasher:
        """Cheap parameters for test suites; never for stored production hashes."""
        return cls(time_cost=1, memory_cost_kib=1024, parallelism=1)

    def hash(self, password: str) -> str:
        return self._argon2.hash(_encode(password))

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored_hash``; ``None`` means "no such user"."""
        if stored_hash is None:
            self._check(self._dummy_hash, password)
            return False
        return self._check(stored_hash, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        """Whether the hash was made with other parameters (or cannot be read at all)."""
        try:
            return self._argon2.check_needs_rehash(stored_hash)
        except ValueError:  # InvalidHashError and friends
            return True

    def _check(self, stored_hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(stored_hash, _encode(password))
        except (VerificationError, InvalidHashError, UnicodeError):
            return False

    def __repr__(self) -> str:
        return (
            f"PasswordHasher(time_cost={self._argon2.time_cost}, "
            f"memory_cost_kib={self._argon2.memory_cost}, "
            f"parallelism={self._argon2.parallelism})"
        )
