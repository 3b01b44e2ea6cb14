"""The example programs run and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_approval_saga_in_virtual_time(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(EXAMPLES / "approval_saga.py"), "--virtual", "--db",
                          str(tmp_path / "saga.db")], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "order-1: pay-order-1, parcel-order-1" in out
    assert "order-2: rejected, stock released" in out
    assert "order-4: no answer, stock released" in out
    assert out.count("compensate: released") == 2
