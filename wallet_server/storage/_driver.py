"""Statements sent on the psycopg connection beneath the SQL toolkit's, in its transaction.

The toolkit's work per statement (compiling or finding the compiled form, an execution
context, result processing, a greenlet switch) costs about three times the driver's own CPU.
Statements that run on every money call therefore go to the driver directly. They are
written like the toolkit's ``text()``, with ``:name`` placeholders, so one text can serve
both; it is translated to psycopg's ``%(name)s`` once per process.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from psycopg.rows import namedtuple_row

__all__ = ["driver_sql", "fetch_rows"]

# ``:name`` but not the second colon of a ``::type`` cast.
_PLACEHOLDER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@cache
def driver_sql(sql: str) -> str:
    """``sql`` with ``:name`` placeholders as ``%(name)s`` (and literal ``%`` doubled)."""
    return _PLACEHOLDER.sub(r"%(\1)s", sql.replace("%", "%%"))


async def fetch_rows(driver: Any, sql: str, params: Mapping[str, Any]) -> list[Any]:
    """Run ``sql`` on the driver connection; its rows as named tuples (none if it returns
    no rows)."""
    async with driver.cursor(row_factory=namedtuple_row) as cur:
        await cur.execute(driver_sql(sql), params)
        return await cur.fetchall() if cur.description is not None else []
