"""Storage: the only package in durably that imports apsw (a test enforces it)."""

from ._backup import backup_file, check_dest, pages_of
from ._connection import expected_pragmas, read_pragmas
from ._lifecycle import accept_wal_loss
from ._schema import APPLICATION_ID, SCHEMA_VERSION
from ._store import Store
from ._transfer import place as place_copy
from ._transfer import remove as remove_copy
from ._transfer import vet_new_file
from .contract import StoreContract, Tx


def is_postgres(path: object) -> bool:
    """Whether ``path`` names a PostgreSQL database (a postgresql:// URL)."""
    return isinstance(path, str) and path.startswith(("postgresql://", "postgres://"))


def make_store(
    path: str,
    synchronous: str = "full",
    vfs: str | None = None,
    check: str = "auto",
    schema: str | None = None,
    checkpoints: str = "engine",
) -> StoreContract:
    """The store for ``path``: a PostgreSQL URL opens the PostgreSQL store
    (in ``schema``, default ``durably``), anything else an SQLite file."""
    if is_postgres(path):
        if vfs is not None or checkpoints != "engine":
            from .. import errors

            what = "vfs=" if vfs is not None else "checkpoints="
            raise errors.UsageError(f"{what} applies to SQLite files, not to a PostgreSQL database")
        try:
            from .pg import PgStore
        except ImportError as exc:  # psycopg is an optional dependency
            from .. import errors

            raise errors.UsageError('a postgresql:// database needs psycopg: pip install "durably[postgres]"') from exc
        return PgStore(path, synchronous, schema=schema)
    if schema is not None:
        from .. import errors

        raise errors.UsageError("schema= applies to a PostgreSQL database, not to an SQLite file")
    return Store(path, synchronous, vfs, check, checkpoints)


__all__ = [
    "make_store",
    "is_postgres",
    "accept_wal_loss",
    "backup_file",
    "check_dest",
    "pages_of",
    "Store",
    "Tx",
    "StoreContract",
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "expected_pragmas",
    "read_pragmas",
    "place_copy",
    "remove_copy",
    "vet_new_file",
]
