"""Options shared by tests/ and crashtests/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run the long tiers")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="long tier: pass --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Every PostgreSQL test skipped for want of a server is reported at one
    place, so the summary says it in one line (with how to run them)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        reason = report.longrepr[2]
        if "PostgreSQL tests skipped" in reason:
            report.longrepr = ("tests/conftest.py", _PG_CHECK_LINE, reason)


# where tests/conftest.py decides that PostgreSQL is unreachable
_PG_CHECK_LINE = next(
    (
        i
        for i, line in enumerate((Path(__file__).parent / "tests" / "conftest.py").read_text().splitlines(), 1)
        if "def pg_unreachable" in line
    ),
    0,
)
