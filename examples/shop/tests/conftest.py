"""The shop's tests bind the shop's declarations to the plugin's engines
(durably's pytest plugin: ``durably_register``), and give every test an
outbox of its own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from examples.shop.flows import reg


@pytest.fixture
def durably_register() -> Callable[[Any], Any]:
    return lambda engine: engine.include(reg)


@pytest.fixture(autouse=True)
def outbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "outbox"
    monkeypatch.setenv("SHOP_OUTBOX", str(path))
    return path
