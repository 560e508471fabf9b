"""Free text people type (memos, names): what may not be in it."""

from __future__ import annotations

import unicodedata

# Embeddings, overrides and isolates reorder what follows them on screen: a memo or name
# holding one can display as something else (an account number read backwards, say).
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Controls (newlines, NUL, escapes), lone surrogates, line and paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def text_problem(value: str) -> str | None:
    """Why ``value`` may not be stored as free text, or None.

    Other format characters are text: the joiner inside emoji such as 👨‍👩‍👧, the marks
    that keep right-to-left words in order, soft hyphens; so are every kind of space and
    characters newer than this Python's Unicode tables."""
    if value.isprintable():  # the common case; it refuses every character refused below
        return None
    for char in value:
        if char in _BIDI_CONTROLS:
            return "must not contain bidirectional override characters"
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            return "must not contain control characters"
    return None
