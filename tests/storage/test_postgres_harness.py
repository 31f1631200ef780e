"""The throwaway PostgreSQL cluster the multi-replica tests run on: it starts, restarts, isolates."""

from __future__ import annotations

import os

import psycopg

from hybrid_assistant.testing.postgres import PostgresServer


def test_databases_are_separate_and_survive_a_restart(postgres: PostgresServer) -> None:
    first, second = postgres.create_database(), postgres.create_database()
    with psycopg.connect(first, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (7)")
    postgres.restart()
    with psycopg.connect(first) as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(7,)]
    with psycopg.connect(second) as conn:
        assert conn.execute("SELECT to_regclass('t')").fetchone() == (None,)


def test_runs_unprivileged(postgres: PostgresServer) -> None:
    with psycopg.connect(postgres.dsn()) as conn:
        row = conn.execute("SELECT current_setting('data_directory')").fetchone()
    assert row == (str(postgres.data),)
    if os.geteuid() == 0:  # PostgreSQL refuses root: the cluster belongs to an unprivileged account
        assert os.stat(postgres.data).st_uid != 0
