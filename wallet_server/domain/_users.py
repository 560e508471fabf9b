"""Users and the rules for their names and passwords."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from wallet_server.domain._errors import FieldViolation, InvalidArgument
from wallet_server.domain._text import text_problem

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{2,31}$")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256
MAX_DISPLAY_NAME_LENGTH = 100


@dataclass(frozen=True, slots=True)
class User:
    user_id: UUID
    username: str
    display_name: str
    kyc_tier: int
    totp_enabled: bool
    created_at: datetime


def normalize_username(raw: str) -> str:
    """Usernames are case-insensitive; the stored form is lower case."""
    return raw.strip().lower()


def validate_registration(username: str, password: str, display_name: str) -> str:
    """Return the normalized username or raise with every bad field listed."""
    violations: list[FieldViolation] = []
    normalized = normalize_username(username)
    if not _USERNAME.match(normalized):
        violations.append(
            FieldViolation(
                "username",
                "3-32 characters: letters, digits, '_', '.', '-'; starting with a letter or digit",
            )
        )
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        violations.append(
            FieldViolation(
                "password",
                f"must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters",
            )
        )
    if len(display_name) > MAX_DISPLAY_NAME_LENGTH:
        violations.append(
            FieldViolation("display_name", f"at most {MAX_DISPLAY_NAME_LENGTH} characters")
        )
    elif (problem := text_problem(display_name)) is not None:
        violations.append(FieldViolation("display_name", problem))
    if violations:
        raise InvalidArgument("invalid registration", violations=tuple(violations))
    return normalized
