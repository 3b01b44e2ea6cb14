"""Storage: the only package in durably that imports apsw (a test enforces it)."""

from ._connection import expected_pragmas, read_pragmas
from ._lifecycle import accept_wal_loss
from ._schema import APPLICATION_ID, SCHEMA_VERSION
from ._store import Store
from ._tx import Tx

__all__ = ["accept_wal_loss", "Store", "Tx", "APPLICATION_ID", "SCHEMA_VERSION", "expected_pragmas", "read_pragmas"]
