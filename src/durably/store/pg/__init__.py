"""PostgreSQL storage (``pip install "durably[postgres]"``): the only package
in durably that imports psycopg. Same contract as the SQLite store
(store/contract.py); see docs/guides/postgresql.md."""

from ._store import PgStore, is_url, redact
from ._tx import PgTx

__all__ = ["PgStore", "PgTx", "is_url", "redact"]
