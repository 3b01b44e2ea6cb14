"""An apsw VFS shim that injects disk faults (fsync EIO, SQLITE_FULL) on demand."""

from __future__ import annotations

import apsw


class FaultVFS(apsw.VFS):
    """Passes everything to the default VFS; ``fail_sync``/``fail_write`` arm faults."""

    def __init__(self, name: str = "fault") -> None:
        self.name = name
        self.fail_sync = False
        self.fail_write = False
        self.syncs = 0
        super().__init__(name, "")

    def xOpen(self, name, flags):
        return FaultFile(self, name, flags)


class FaultFile(apsw.VFSFile):
    def __init__(self, vfs: FaultVFS, name, flags) -> None:
        self.vfs = vfs
        super().__init__("", name, flags)

    def xSync(self, flags):
        if self.vfs.fail_sync:
            raise apsw.IOError("injected fsync failure")
        self.vfs.syncs += 1
        return super().xSync(flags)

    def xWrite(self, data, offset):
        if self.vfs.fail_write:
            raise apsw.FullError("injected disk full")
        return super().xWrite(data, offset)
