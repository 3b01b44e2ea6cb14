"""Standalone soak run (RSS against 10^5 workflows); see scenarios/soak.py.

python bench/soak.py --workflows 20000        # quick
python bench/soak.py --workflows 200000       # the full soak
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenarios.soak import main

if __name__ == "__main__":
    sys.exit(main())
