"""Free text (memos, display names, payout holder names): what people write is kept; what
hides or reorders text, or breaks lines, is refused on its field."""

from __future__ import annotations

import pytest

from wallet_server.domain import InvalidArgument, text_problem, validate_registration
from wallet_server.transport._mapping import parse_text

KEPT = [
    "Dinner 🍕 split",
    "family 👨\u200d👩\u200d👧 trip",  # zero-width joiners inside one emoji
    "rainbow flag 🏳\ufe0f\u200d🌈",
    "\u05e9\u05dc\u05d5\u05dd 123\u200f",  # Hebrew with a right-to-left mark
    "東京\u3000駅",  # ideographic space
    "caf\u00e9\u00a0au lait",  # no-break space
    "Zürich co\u00adop",  # soft hyphen
    "new emoji \U0001fae8",  # newer than some Unicode tables
]
CONTROL = ["two\nlines", "tab\there", "nul\x00", "escape\x1b[31m", "line\u2028sep", "para\u2029"]
BIDI = ["invoice \u202egnp.exe", "\u2066isolated\u2069", "\u202aembedded\u202c"]


@pytest.mark.parametrize("text", KEPT)
def test_what_people_write_is_text(text: str) -> None:
    assert text_problem(text) is None
    assert parse_text(text, "memo", max_length=200) == text


@pytest.mark.parametrize(
    ("text", "problem"), [(t, "control") for t in CONTROL] + [(t, "bidi") for t in BIDI]
)
def test_controls_and_reordering_characters_are_refused_on_their_field(
    text: str, problem: str
) -> None:
    expected = (
        "must not contain control characters"
        if problem == "control"
        else "must not contain bidirectional override characters"
    )
    assert text_problem(text) == expected
    with pytest.raises(InvalidArgument) as caught:
        parse_text(text, "memo", max_length=200)
    assert [(v.field, v.description) for v in caught.value.violations] == [("memo", expected)]


def test_display_names_follow_the_same_rule() -> None:
    assert validate_registration("alice", "long enough pw", "Ana 👩\u200d💻") == "alice"
    with pytest.raises(InvalidArgument) as caught:
        validate_registration("alice", "long enough pw", "Ana\u202e")
    assert [v.field for v in caught.value.violations] == ["display_name"]
