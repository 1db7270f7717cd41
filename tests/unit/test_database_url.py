"""DATABASE_URL for the campaign service's asyncpg read pool (services/common/db.py)."""

from __future__ import annotations

from services.common.db import asyncpg_connection


def test_a_plain_url_passes_unchanged() -> None:
    assert asyncpg_connection("postgresql+psycopg://u:p@db:5432/herald") == ("postgresql://u:p@db:5432/herald", {})


def test_parameters_asyncpg_knows_or_postgresql_accepts_are_kept() -> None:
    dsn, args = asyncpg_connection(
        "postgresql://u@/herald?host=/run/postgresql&sslmode=require&application_name=x&target_session_attrs=read-write"
    )
    assert dsn == (
        "postgresql://u@/herald?host=%2Frun%2Fpostgresql&sslmode=require&application_name=x"
        "&target_session_attrs=read-write"
    )
    assert args == {}


def test_libpq_only_parameters_become_connect_arguments_or_are_left_out() -> None:
    dsn, args = asyncpg_connection(
        "postgresql://u@db/herald?connect_timeout=7&keepalives=1&sslmode=verify-full"
        "&options=-c%20statement_timeout%3D5s%20--search-path%3Dpublic%20-cwork_mem%3D4MB"
    )
    assert dsn == "postgresql://u@db/herald?sslmode=verify-full"
    assert args == {
        "timeout": 7.0,
        "server_settings": {"statement_timeout": "5s", "search_path": "public", "work_mem": "4MB"},
    }
