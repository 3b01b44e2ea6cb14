"""The PostgreSQL server the PostgreSQL scenarios run against
(``DURABLY_BENCH_PG``, default the local server), and fresh schemas on it."""

from __future__ import annotations

import os
import uuid

URL = os.environ.get("DURABLY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


def fresh_url(stem: str, **extra: str) -> str:
    """An engine URL naming a fresh durably schema (dropped by ``drop``)."""
    query = "&".join(f"{k}={v}" for k, v in extra.items())
    return f"{URL}?schema=b_{stem}_{uuid.uuid4().hex[:8]}" + (f"&{query}" if query else "")


def drop(url: str) -> None:
    import psycopg

    schema = url.split("schema=")[1].split("&")[0]
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
