"""Array parameters built by ``storage._arrays`` read back as the values they were built from."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg.adapt import PyFormat, Transformer

from wallet_server.storage import create_engine
from wallet_server.storage._arrays import (
    BinaryArray,
    bigint_array,
    bytea_array,
    text_array,
    timestamptz_array,
    uuid_array,
)
from wallet_server.storage._driver import driver_of

_NOW = datetime.now(UTC)
_IDS = [uuid.uuid4() for _ in range(300)]

CASES: list[tuple[str, Callable[[Any], BinaryArray], Sequence[Any]]] = [
    ("uuid[]", uuid_array, _IDS),
    ("uuid[]", uuid_array, [uuid.UUID(int=0), None, _IDS[0], None, _IDS[0]]),
    ("uuid[]", uuid_array, [None]),
    ("uuid[]", uuid_array, []),
    ("text[]", text_array, ["transfer"] * 50 + ["deposit", "", "é€😀", "tab\there"]),
    ("text[]", text_array, [None, "a", None, "a"]),
    ("text[]", text_array, ["x" * 5000, "y" * 70_000]),
    ("text[]", text_array, []),
    ("bigint[]", bigint_array, [0, 1, -1, 2**63 - 1, -(2**63), 12_345]),
    ("bigint[]", bigint_array, []),
    (
        "timestamptz[]",
        timestamptz_array,
        [
            _NOW,
            None,
            _NOW,
            datetime(2000, 1, 1, tzinfo=UTC) - timedelta(microseconds=1),
            datetime(1970, 1, 1, tzinfo=UTC),
            datetime(2100, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        ],
    ),
    ("bytea[]", bytea_array, [b"", b"\x00\xff" * 20, None, bytes(range(256))]),
]


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url) as connection:
        yield connection


@pytest.mark.parametrize(("sql_type", "build", "values"), CASES)
def test_an_array_reads_back_as_its_values(
    conn: psycopg.Connection[Any],
    sql_type: str,
    build: Callable[[Any], BinaryArray],
    values: Sequence[Any],
) -> None:
    row = conn.execute(f"SELECT %b::{sql_type}", (build(values),)).fetchone()
    assert row is not None
    got = [bytes(v) if isinstance(v, memoryview) else v for v in row[0]]
    assert got == list(values)


def test_a_time_in_another_zone_is_the_same_instant(conn: psycopg.Connection[Any]) -> None:
    india = datetime(
        2026, 12, 6, 21, 30, 0, 123_456, tzinfo=timezone(timedelta(hours=5, minutes=30))
    )
    row = conn.execute(
        "SELECT %b::timestamptz[] = ARRAY[%s::timestamptz]", (timestamptz_array([india]), india)
    ).fetchone()
    assert row == (True,)


def test_columns_of_different_lengths_unnest_together(conn: psycopg.Connection[Any]) -> None:
    """As the set-based statements use them: parallel columns, row by row."""
    ids = _IDS[:3]
    rows = conn.execute(
        "SELECT * FROM unnest(%b::uuid[], %b::text[], %b::bigint[]) WITH ORDINALITY",
        (uuid_array(ids), text_array(["a", None, "c"]), bigint_array([1, 2, 3])),
    ).fetchall()
    assert rows == [(ids[0], "a", 1, 1), (ids[1], None, 2, 2), (ids[2], "c", 3, 3)]


# psycopg picks the smallest integer type for a list of ints, and text for an empty or
# all-NULL list: those arrays carry another element oid, so their bytes differ.
SAME_AS_PSYCOPG = [
    (build, values)
    for sql_type, build, values in CASES
    if sql_type != "bigint[]" and any(v is not None for v in values)
]


@pytest.mark.parametrize(("build", "values"), SAME_AS_PSYCOPG)
def test_the_bytes_are_those_of_psycopgs_own_list_dumper(
    build: Callable[[Any], BinaryArray], values: Sequence[Any]
) -> None:
    (theirs,) = Transformer().dump_sequence([list(values)], [PyFormat.BINARY])
    assert build(values).data == bytes(theirs)  # type: ignore[arg-type]


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(TypeError, match="aware"):
        timestamptz_array([datetime(2026, 1, 1)])


def test_a_null_integer_is_refused() -> None:
    with pytest.raises(struct.error):
        bigint_array([1, None])  # type: ignore[list-item]


async def test_every_connection_of_the_engine_sends_arrays_with_either_placeholder(
    database_url: str,
) -> None:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            driver = await driver_of(conn)
            for placeholder in ("%s", "%b"):
                cur = await driver.execute(
                    f"SELECT {placeholder}::text[]", (text_array(["a", None]),)
                )
                assert await cur.fetchone() == (["a", None],)
    finally:
        await engine.dispose()
