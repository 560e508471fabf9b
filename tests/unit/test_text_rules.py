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
    "Scotland \U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # tags
    "\u0627\u0644\u0633\u0644\u0627\u0645\u061c 5",  # Arabic letter mark
]
CONTROL = ["two\nlines", "tab\there", "nul\x00", "escape\x1b[31m", "line\u2028sep", "para\u2029"]
BIDI = ["invoice \u202egnp.exe", "\u2066isolated\u2069", "\u202aembedded\u202c"]
INVISIBLE = ["Shop\u200b", "Coffee\u2060Co", "\ufeffAlice", "a\u2062b", "x\u206ay", "\ufff9note"]
ONLY_INVISIBLE = ["\u200d", "\u200d\u200d", " \u200f "]


@pytest.mark.parametrize("text", KEPT)
def test_what_people_write_is_text(text: str) -> None:
    assert text_problem(text) is None
    assert parse_text(text, "memo", max_length=200) == text


PROBLEMS = {
    "control": "must not contain control characters",
    "bidi": "must not contain bidirectional override characters",
    "invisible": "must not contain invisible formatting characters",
    "only invisible": "must contain a visible character",
}
REFUSED = [
    *((t, "control") for t in CONTROL),
    *((t, "bidi") for t in BIDI),
    *((t, "invisible") for t in INVISIBLE),
    *((t, "only invisible") for t in ONLY_INVISIBLE),
]


@pytest.mark.parametrize(("text", "problem"), REFUSED)
def test_controls_reordering_and_invisible_characters_are_refused_on_their_field(
    text: str, problem: str
) -> None:
    expected = PROBLEMS[problem]
    assert text_problem(text) == expected
    with pytest.raises(InvalidArgument) as caught:
        parse_text(text, "memo", max_length=200)
    assert [(v.field, v.description) for v in caught.value.violations] == [("memo", expected)]


def test_display_names_follow_the_same_rule() -> None:
    assert validate_registration("alice", "long enough pw", "Ana 👩\u200d💻") == "alice"
    for hidden in ("Ana\u202e", "\u200b\u200b", "\u200d"):
        with pytest.raises(InvalidArgument) as caught:
            validate_registration("alice", "long enough pw", hidden)
        assert [v.field for v in caught.value.violations] == ["display_name"]
