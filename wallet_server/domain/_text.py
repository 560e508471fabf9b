"""Free text people type (memos, names): what may not be in it."""

from __future__ import annotations

import unicodedata

# Embeddings, overrides and isolates reorder what follows them on screen: a memo or name
# holding one can display as something else (an account number read backwards, say).
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# The invisible format characters that belong in text: the joiners inside emoji and
# scripts, the marks that keep right-to-left words in order, and the soft hyphen. The tag
# characters of subdivision flags (🏴 + tags) are allowed below by their range.
_TEXT_FORMAT = frozenset("\u200c\u200d\u200e\u200f\u061c\u00ad")
_TAGS = range(0xE0020, 0xE0080)
# Controls (newlines, NUL, escapes), lone surrogates, line and paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def text_problem(value: str) -> str | None:
    """Why ``value`` may not be stored as free text, or None.

    Text keeps emoji sequences, right-to-left marks, every kind of space and characters
    newer than this Python's Unicode tables. It may not hold controls, characters that
    reorder what follows, or invisible ones that make two names look the same ("Shop" and
    "Shop" with a zero-width space); nor be made only of invisible characters."""
    if value.isprintable():  # the common case; it refuses every character refused below
        return None
    formats = visible = False
    for char in value:
        if char in _BIDI_CONTROLS:
            return "must not contain bidirectional override characters"
        category = unicodedata.category(char)
        if category in _REFUSED_CATEGORIES:
            return "must not contain control characters"
        if category == "Cf":
            if char not in _TEXT_FORMAT and ord(char) not in _TAGS:
                return "must not contain invisible formatting characters"
            formats = True
        elif not char.isspace():
            visible = True
    return "must contain a visible character" if formats and not visible else None
