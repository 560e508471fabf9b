"""How many server processes ``serve`` starts, given the cores and the database's
connection limit."""

from __future__ import annotations

import pytest

from wallet_server._workers import StartupError, worker_count


def test_by_default_one_worker_per_core_when_the_database_has_room() -> None:
    assert worker_count(None, cores=4, per_worker=21, database_limit=97) == 4


def test_by_default_only_as_many_workers_as_the_connections_serve() -> None:
    # 16 cores but 97 connections at 21 each: 4 workers, not 16 that would run out.
    assert worker_count(None, cores=16, per_worker=21, database_limit=97) == 4


def test_an_explicit_count_that_fits_is_kept() -> None:
    assert worker_count(3, cores=2, per_worker=21, database_limit=97) == 3


def test_an_explicit_count_that_would_run_out_refuses_to_start() -> None:
    with pytest.raises(StartupError, match=r"5 worker\(s\) may open 105 .* allows 97"):
        worker_count(5, cores=8, per_worker=21, database_limit=97)


def test_even_one_worker_refuses_when_the_database_is_too_small() -> None:
    with pytest.raises(StartupError, match="allows 15"):
        worker_count(None, cores=2, per_worker=21, database_limit=15)
