"""Statements written with ``:name`` placeholders, translated for the psycopg driver."""

from __future__ import annotations

from wallet_server.storage._driver import driver_sql


def test_named_placeholders_become_psycopg_ones_and_casts_stay() -> None:
    sql = "SELECT CAST(:ids AS uuid[]), :at::timestamptz, x::text FROM t WHERE a = :at"
    assert driver_sql(sql) == (
        "SELECT CAST(%(ids)s AS uuid[]), %(at)s::timestamptz, x::text FROM t WHERE a = %(at)s"
    )


def test_a_literal_percent_is_kept_literal() -> None:
    assert driver_sql("SELECT 'a%' LIKE :p, 7 % :n") == "SELECT 'a%%' LIKE %(p)s, 7 %% %(n)s"


def test_a_colon_inside_a_word_or_after_a_digit_is_no_placeholder() -> None:
    assert driver_sql("SELECT a:b, 1:2, :_x1") == "SELECT a:b, 1:2, %(_x1)s"
