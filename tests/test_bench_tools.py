"""The measuring scripts the performance reports cite (bench/), run small:
each still runs against this tree and prints the figures it promises.
(Figures are measured by running them, never asserted here: a test only
checks that the script works and that what it prints is consistent.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import durably

from .conftest import database

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


def _run(script: str, *args: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_overlap_reports_the_loop_and_the_writer_of_each_round() -> None:
    lines = _run("overlap.py", "--rounds", "2", "--workflows", "64", "--steps", "3").splitlines()
    rounds = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(rounds) == 2
    for r in rounds:
        assert r["steps_per_s"] > 0 and r["batches"] >= 1
        # every record went through a timed flush, and a flush's CPU is part of its wall time
        assert 0 < r["flush_cpu_ms"] <= r["flush_ms"] + 1.0
        assert r["loop_cpu_ms"] > 0 and r["loop_idle_ms"] >= 0
    median = json.loads(lines[-1].removeprefix("median "))
    assert median["switch_interval"] == pytest.approx(0.005)
    assert median["durably"] == durably.__file__  # the durably under test


def test_overlap_sets_the_switch_interval_it_is_given() -> None:
    last = _run("overlap.py", "--rounds", "1", "--workflows", "16", "--steps", "2", "--switch-interval", "0.001")
    assert json.loads(last.splitlines()[-1].removeprefix("median "))["switch_interval"] == pytest.approx(0.001)


def test_thread_floor_prints_a_median_over_its_runs() -> None:
    out = _run("thread_floor.py", "--reps", "2", "--threads", "4", "--workflows", "8", "--steps", "3")
    m = re.fullmatch(
        r"4 threads x workflows of 3 steps \(5 records each\): median ([\d,]+) steps/s "
        r"\(min ([\d,]+), max ([\d,]+), 2 runs\)\n",
        out,
    )
    assert m is not None, out
    median, low, high = (int(g.replace(",", "")) for g in m.groups())
    assert 0 < low <= median <= high


def test_thread_cpu_reports_each_thread() -> None:
    out = json.loads(_run("thread_cpu.py", "--rounds", "1", "--workflows", "32", "--steps", "3"))
    assert out["wall_us"] > 0 and out["main_us"] > 0 and out["writer_us"] > 0
    assert "server_us" not in out
    assert out["durably"] == durably.__file__


def test_thread_cpu_on_postgresql_adds_the_servers_cpu() -> None:
    with database("postgresql") as url:  # skips (or fails, where required) without the test server
        args = ("--rounds", "1", "--workflows", "32", "--steps", "3", "--postgresql")
        out = json.loads(_run("thread_cpu.py", *args, env={"DURABLY_BENCH_PG": url.split("?")[0]}))
    assert out["wall_us"] > 0 and out["writer_us"] > 0
    assert out["server_us"] > 0  # the server did the inserts: its processes spent CPU on them
