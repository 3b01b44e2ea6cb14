"""Power loss and disk faults without root: an apsw VFS shim.

Every write goes through to the real file, but until the file is synced the
shim keeps an *undo record* (the bytes and size it replaced). That is the
state a power cut could leave:

* ``powerloss``: at the n-th I/O operation (write, sync or truncate) the
  process "loses power": each file is rolled back to its last synced state,
  then a seeded random subset of the unsynced writes is re-applied, some of
  them torn at a 512-byte sector boundary (``torn=1``), or none of them
  (``torn=0``), and the process SIGKILLs itself.
* ``full``: the n-th write fails with SQLITE_FULL (nothing written).
* ``eio``: the n-th sync fails with EIO with Linux semantics: the unsynced
  data of that file is gone (rolled back), and the next sync "succeeds".

Configured by environment (so a subprocess workload can arm it):
``DURABLY_VFS=mode:n:seed:torn``. Only the database and WAL files count.
"""

from __future__ import annotations

import os
import random
import signal
from typing import Any

import apsw

SECTOR = 512


class _Shared:
    def __init__(self, mode: str, at: int, seed: int, torn: bool) -> None:
        self.mode, self.at, self.torn = mode, at, torn
        self.rng = random.Random(seed)
        self.ops = 0
        self.writes = 0
        self.syncs = 0
        self.files: list[ShimFile] = []


class ShimVFS(apsw.VFS):
    def __init__(self, name: str, mode: str, at: int, seed: int = 0, torn: bool = False) -> None:
        if mode not in ("powerloss", "full", "eio", "count"):
            raise ValueError(f"unknown shim mode {mode!r}")
        self.shared = _Shared(mode, at, seed, torn)
        super().__init__(name, "")

    def xOpen(self, name: Any, flags: Any) -> ShimFile:
        return ShimFile(self.shared, name, flags)


class ShimFile(apsw.VFSFile):
    def __init__(self, shared: _Shared, name: Any, flags: Any) -> None:
        super().__init__("", name, flags)
        self.shared = shared
        fname = name if isinstance(name, str) else (name.filename() if name is not None else "")
        self.tracked = bool(fname) and not fname.endswith("-shm")
        self.undo: list[tuple[int, bytes, bytes, int]] = []  # (offset, old, new, old_size)
        if self.tracked:
            shared.files.append(self)

    # -- the fault clock -------------------------------------------------------

    def _tick(self, kind: str) -> None:
        s = self.shared
        s.ops += 1
        if kind == "write":
            s.writes += 1
        elif kind == "sync":
            s.syncs += 1
        if s.mode == "powerloss" and s.ops == s.at:
            power_loss(s)
        if s.mode == "full" and kind == "write" and s.writes == s.at:
            raise apsw.FullError("injected: disk full")
        if s.mode == "eio" and kind == "sync" and s.syncs == s.at:
            self._rollback_unsynced()  # Linux drops the dirty pages and marks them clean
            raise apsw.IOError("injected: fsync EIO")

    # -- file operations ---------------------------------------------------------

    def xWrite(self, data: bytes, offset: int) -> None:
        if not self.tracked:
            return super().xWrite(data, offset)
        self._tick("write")
        size = super().xFileSize()
        old = super().xRead(len(data), offset) if offset < size else b""
        self.undo.append((offset, bytes(old), bytes(data), size))
        return super().xWrite(data, offset)

    def xTruncate(self, newsize: int) -> None:
        if not self.tracked:
            return super().xTruncate(newsize)
        self._tick("truncate")
        size = super().xFileSize()
        if newsize < size:
            self.undo.append((newsize, bytes(super().xRead(size - newsize, newsize)), b"", size))
        return super().xTruncate(newsize)

    def xSync(self, flags: int) -> None:
        if not self.tracked:
            return super().xSync(flags)
        self._tick("sync")
        super().xSync(flags)
        self.undo.clear()

    def xClose(self) -> None:
        if self in self.shared.files:
            self.shared.files.remove(self)
        return super().xClose()

    # -- rolling back ------------------------------------------------------------

    def _rollback_unsynced(
        self, keep: set[int] | None = None, tear: int | None = None, rng: random.Random | None = None
    ) -> None:
        """Return the file to its last synced state, then re-apply the writes in
        ``keep`` (torn at a sector boundary for index ``tear``)."""
        entries = self.undo
        for offset, old, _new, old_size in reversed(entries):
            if old:
                super().xWrite(old, offset)
            if super().xFileSize() > old_size:
                super().xTruncate(old_size)
        for i, (offset, _old, new, _size) in enumerate(entries):
            if keep is None or i not in keep or not new:
                continue
            if i == tear and rng is not None and len(new) > SECTOR:
                cut = rng.randrange(1, len(new) // SECTOR) * SECTOR
                new = new[:cut]
            super().xWrite(new, offset)
        self.undo = []
        super().xSync(0)


def power_loss(shared: _Shared) -> None:
    """Leave every tracked file as a power cut could, then die like one."""
    rng = shared.rng
    for f in list(shared.files):
        keep: set[int] = set()
        tear = None
        if shared.torn and f.undo:
            keep = {i for i in range(len(f.undo)) if rng.random() < 0.5}
            tear = rng.choice(sorted(keep)) if keep else None
        f._rollback_unsynced(keep, tear, rng)
    os.kill(os.getpid(), signal.SIGKILL)


def install_from_env(name: str = "shim") -> ShimVFS | None:
    """Register the shim described by ``DURABLY_VFS=mode:n:seed:torn``, if set."""
    spec = os.environ.get("DURABLY_VFS", "")
    if not spec:
        return None
    mode, at, seed, torn = (spec.split(":") + ["0", "0", "0"])[:4]
    return ShimVFS(name, mode, int(at), int(seed), torn == "1")
