"""The certificate revocation list: serial numbers refused although their chain is valid."""

from __future__ import annotations

import re
from pathlib import Path

_DECIMAL = re.compile(r"[0-9]{1,64}")
_HEX = re.compile(r"0[xX][0-9a-fA-F]{1,64}")


def load_revoked_serials(path: Path | None) -> frozenset[int]:
    """Serials listed one per line, decimal or ``0x`` hex; ``#`` starts a comment.

    No path or no file means nothing is revoked. A line that is not a serial is a
    ``ValueError`` naming the file and line, never silently skipped.
    """
    if path is None:
        return frozenset()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return frozenset()
    serials: set[int] = set()
    for line_number, line in enumerate(text.splitlines(), start=1):
        entry = line.partition("#")[0].strip()
        if entry:
            serials.add(_parse_serial(entry, path, line_number))
    return frozenset(serials)


def _parse_serial(entry: str, path: Path, line_number: int) -> int:
    if _DECIMAL.fullmatch(entry):
        return int(entry, 10)
    if _HEX.fullmatch(entry):
        return int(entry[2:], 16)
    raise ValueError(
        f"{path}:{line_number}: not a certificate serial number "
        f"(expected decimal or 0x-hex): {entry!r}"
    )
