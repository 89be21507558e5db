"""A shared store's location: which server, database and prefix it uses, never a credential."""

from __future__ import annotations

import pytest

from modelyard.state.postgres import PostgresStore
from modelyard.state.redis import RedisStore


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("redis://127.0.0.1:6379/0", "127.0.0.1:6379/0, m:*"),
        ("redis://default:pa55word@Cache.Internal:6380/2", "cache.internal:6380/2, m:*"),
        ("redis://cache", "cache:6379/0, m:*"),
        ("rediss://:pa55word@cache/3?password=pa55word", "cache:6379/3, m:*"),
        ("unix:///run/redis.sock?db=4&password=pa55word", "/run/redis.sock/4, m:*"),
        ("redis://[::1]:7000", "[::1]:7000/0, m:*"),
    ],
)
def test_a_redis_store_is_located_by_server_database_and_prefix(url: str, where: str) -> None:
    assert RedisStore(url, prefix="m:").location == where


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("postgresql://app:pa55word@db.internal/prod", "db.internal:5432/prod, m_*"),
        ("postgres://app@db:6432/prod?sslmode=require&password=pa55word", "db:6432/prod, m_*"),
        ("postgresql:///prod?host=/run/postgresql", "/run/postgresql:5432/prod, m_*"),
        ("postgresql://app:pa55word@db", "db:5432/app, m_*"),  # the user's own database
    ],
)
def test_a_postgres_store_is_located_by_server_database_and_tables(url: str, where: str) -> None:
    assert PostgresStore(url, table_prefix="m_").location == where
