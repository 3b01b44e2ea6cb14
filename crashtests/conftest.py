"""Markers of the crash tiers."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "pg_server_restart: restarts the PostgreSQL server and terminates backends mid-run; never run "
        "beside other PostgreSQL tests (crashtests/test_pg_process_crashes.py)",
    )
