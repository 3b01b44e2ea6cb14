"""Negative control for the power-loss shim: plain apsw, no durably.

    DURABLY_VFS=powerloss:n:seed:1 python crashtests/raw_workload.py DB ACKS SYNC JOURNAL

Commits small transactions of random-size rows through the shim with the
given ``synchronous`` and ``journal_mode`` and appends each acknowledged
transaction number to ACKS (fsynced, outside the shim). With
``synchronous=OFF`` a power cut must be caught as corruption or lost
acknowledged transactions; with FULL never (that proves the shim is fair).
"""

from __future__ import annotations

import os
import random
import sys

import apsw

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vfs import install_from_env

db, acks, sync, journal = sys.argv[1:5]
shim = install_from_env()
conn = apsw.Connection(db, vfs="shim") if shim else apsw.Connection(db)
conn.pragma("journal_mode", journal)
conn.pragma("synchronous", sync)
conn.pragma("cache_size", 8)  # spill pages early: more writes in flight
conn.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, txn INTEGER, v TEXT, pad BLOB)")
conn.execute("CREATE INDEX IF NOT EXISTS t_v ON t (v)")
ack_fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
rng = random.Random(1)
start = conn.execute("SELECT coalesce(max(txn), 0) FROM t").get
for txn in range(start + 1, start + 41):
    conn.execute("BEGIN IMMEDIATE")
    for _ in range(8):
        conn.execute(
            "INSERT INTO t (txn, v, pad) VALUES (?, ?, randomblob(?))",
            (txn, f"{rng.random():.12f}", rng.randint(50, 1500)),
        )
    conn.execute("COMMIT")
    os.write(ack_fd, f"{txn}\n".encode())
    os.fsync(ack_fd)
conn.close()
