"""Journal selector: the Cython writer unless ``DURABLY_NO_EXTENSIONS`` is set
or the package was built without it (``DURABLY_NO_EXTENSIONS=1 pip install .``
leaves a ``PURE_BUILD`` marker here: see setup.py).

A normal install must have the extension; if it is missing there, importing
durably fails loudly instead of silently running the slower twin.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

PURE_BUILD = (Path(__file__).parent / "PURE_BUILD").exists()
NO_EXTENSIONS = bool(os.environ.get("DURABLY_NO_EXTENSIONS")) or PURE_BUILD

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._journal_py import Journal, Record
    from ._journal_py import _resolve as DELIVER

    IMPLEMENTATION = "python"
else:
    try:
        from ._journal_c import Journal, Record
        from ._journal_c import _resolve as DELIVER
    except ImportError as exc:  # pragma: no cover - a broken build
        raise ImportError(
            "durably's compiled journal (durably.journal._journal_c) is missing: the "
            "package was not built. Reinstall it with a C compiler available, or set "
            "DURABLY_NO_EXTENSIONS=1 to use the pure-Python journal."
        ) from exc

    IMPLEMENTATION = "cython"

# The loop callback by which the writer hands a durable batch's outcomes to
# an event loop (runtime/context.py tells it apart in the ready queue).
__all__ = ["Journal", "Record", "DELIVER", "IMPLEMENTATION"]
