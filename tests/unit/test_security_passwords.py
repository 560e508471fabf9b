from __future__ import annotations

import argon2
import pytest

from wallet_server.security import PasswordHasher


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher.for_tests()


def test_a_hashed_password_verifies(hasher: PasswordHasher) -> None:
    stored = hasher.hash("correct horse battery staple")

    assert stored.startswith("$argon2id$")
    assert hasher.verify(stored, "correct horse battery staple")


def test_hashes_are_salted(hasher: PasswordHasher) -> None:
    assert hasher.hash("same password") != hasher.hash("same password")


def test_a_wrong_password_does_not_verify(hasher: PasswordHasher) -> None:
    stored = hasher.hash("secret-1")

    assert not hasher.verify(stored, "secret-2")
    assert not hasher.verify(stored, "")
    assert not hasher.verify(stored, "secret-1 ")


@pytest.mark.parametrize(
    "password", ["pässwörd ✓", "", "\x00nul inside", "\ud800 lone surrogate", "x" * 10_000]
)
def test_any_string_round_trips(hasher: PasswordHasher, password: str) -> None:
    assert hasher.verify(hasher.hash(password), password)
    assert not hasher.verify(hasher.hash(password), password + "!")


@pytest.mark.parametrize(
    "corrupt",
    [
        "",
        "not a hash",
        "$argon2id$",
        "$argon2id$v=19$m=1024,t=1,p=1$bm90IGEgc2FsdA$",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        "$argon2id$v=19$m=1024,t=1,p=1$é$é",
    ],
)
def test_a_corrupt_hash_does_not_verify(hasher: PasswordHasher, corrupt: str) -> None:
    assert not hasher.verify(corrupt, "anything")


def test_a_truncated_hash_does_not_verify(hasher: PasswordHasher) -> None:
    stored = hasher.hash("secret")

    assert not hasher.verify(stored[:-4], "secret")


def test_an_unknown_user_does_not_verify(hasher: PasswordHasher) -> None:
    assert not hasher.verify(None, "anything")
    assert not hasher.verify(None, "")


def test_an_unknown_user_costs_a_full_verification(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    verified_hashes: list[str] = []
    original_verify = argon2.PasswordHasher.verify

    def spy(self: argon2.PasswordHasher, hash: str | bytes, password: str | bytes) -> bool:
        verified_hashes.append(str(hash))
        return original_verify(self, hash, password)

    monkeypatch.setattr(argon2.PasswordHasher, "verify", spy)

    assert not hasher.verify(None, "anything")

    # The same argon2id work as for a real user: one verification with the current parameters.
    assert len(verified_hashes) == 1
    assert verified_hashes[0].startswith("$argon2id$")
    assert not hasher.needs_rehash(verified_hashes[0])


def test_needs_rehash_when_parameters_change(hasher: PasswordHasher) -> None:
    stored = hasher.hash("secret")
    stronger = PasswordHasher(time_cost=2, memory_cost_kib=2048, parallelism=1)

    assert not hasher.needs_rehash(stored)
    assert stronger.needs_rehash(stored)
    assert stronger.verify(stored, "secret")


def test_an_unreadable_hash_needs_rehash(hasher: PasswordHasher) -> None:
    assert hasher.needs_rehash("garbage")


@pytest.mark.parametrize(
    ("time_cost", "memory_cost_kib", "parallelism"),
    [(0, 1024, 1), (1, 1024, 0), (1, 7, 1), (1, 15, 2)],
)
def test_invalid_parameters_are_refused(
    time_cost: int, memory_cost_kib: int, parallelism: int
) -> None:
    with pytest.raises(ValueError, match="argon2"):
        PasswordHasher(
            time_cost=time_cost, memory_cost_kib=memory_cost_kib, parallelism=parallelism
        )


def test_repr_shows_parameters_only(hasher: PasswordHasher) -> None:
    assert repr(hasher) == "PasswordHasher(time_cost=1, memory_cost_kib=1024, parallelism=1)"
