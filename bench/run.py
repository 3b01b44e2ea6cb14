"""durably benchmarks: fsync and throughput profiling on local disk, with the
raw SQLite limit and a peer (DBOS Transact, when installed) side by side.

    python bench/run.py [--dir DIR] [--reps 5] [--quick] [--only PATTERN,...] [--list]
    python bench/run.py --only 'durably.async?c=1024?full?' --against ../base   # interleaved pairs

Method: every figure is a median over ``--reps`` repetitions, each in a fresh
process; within a repetition the scenarios run in shuffled order (so machine
noise hits them alike), and ratios (durably / fdatasync, durably / raw SQLite,
durably / peer, compiled / twin) are computed per repetition, then summarised.
Output: ``bench/results/<time>/`` with ``results.json`` (figures, raw runs and
the environment), ``report.md`` and PNG charts. ``--quick`` is a smoke run of
a subset (3 repetitions, smaller sizes; about two minutes).
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scenarios import REGISTRY  # noqa: E402

# (numerator entry, figure, denominator entry, figure): the first pair whose
# entries both ran is used for each ratio.
RATIOS: dict[str, list[tuple[str, str, str, str]]] = {
    "sequential / fdatasync": [("durably.sequential[full]", "steps_per_s", "disk.fdatasync[append]", "ops_per_s")],
    "sequential / raw SQLite 1-row commits": [
        ("durably.sequential[full]", "steps_per_s", "sqlite.commit[rows=1]", "commits_per_s")
    ],
    "async 1024 / raw SQLite rows (100-row commits)": [
        ("durably.async[c=1024,full]", "steps_per_s", "sqlite.commit[rows=100]", "rows_per_s")
    ],
    "async 1024 / peer (DBOS)": [
        ("durably.async[c=1024,full]", "steps_per_s", "dbos.async[c=1024,full]", "steps_per_s"),
        ("durably.async[c=1024,full]", "steps_per_s", "dbos.async[c=64,full]", "steps_per_s"),
    ],
    "PostgreSQL: sequential / raw 1-row commits": [
        ("pg.durably.sequential[full]", "steps_per_s", "pg.raw.commit[rows=1]", "commits_per_s")
    ],
    "PostgreSQL: async 1024 / DBOS on PostgreSQL": [
        ("pg.durably.async[c=1024,full]", "steps_per_s", "pg.dbos.async[c=1024,full]", "steps_per_s"),
        ("pg.durably.async[c=256,full]", "steps_per_s", "pg.dbos.async[c=256,full]", "steps_per_s"),
    ],
    "PostgreSQL: sequential / DBOS sequential": [
        ("pg.durably.sequential[full]", "steps_per_s", "pg.dbos.sequential", "steps_per_s")
    ],
    "PostgreSQL: async 1024 / raw rows (100-row commits)": [
        ("pg.durably.async[c=1024,full]", "steps_per_s", "pg.raw.commit[rows=100]", "rows_per_s"),
        ("pg.durably.async[c=256,full]", "steps_per_s", "pg.raw.commit[rows=100]", "rows_per_s"),
    ],
    "async 1024 on uvloop / on asyncio's loop": [
        ("durably.async[c=1024,full,uvloop]", "steps_per_s", "durably.async[c=1024,full]", "steps_per_s")
    ],
    "compiled / twin journal (async 1024)": [
        ("durably.async[c=1024,full,cython]", "steps_per_s", "durably.async[c=1024,full,twin]", "steps_per_s")
    ],
    "async 1024 with retention deleting / without": [
        (
            "retention.async[c=1024,on]",
            "steps_per_s",
            "retention.async[c=1024,off]",
            "steps_per_s",
        )
    ],
    "async 1024 with the web view open / without": [
        ("webview.async[c=1024,open]", "steps_per_s", "webview.async[c=1024,closed]", "steps_per_s")
    ],
    "async 1024 OpenTelemetry installed, not configured / absent": [
        ("otel.async[c=1024,disabled]", "steps_per_s", "otel.async[c=1024,absent]", "steps_per_s")
    ],
    "async 1024 OpenTelemetry SDK, no-op exporter / absent": [
        ("otel.async[c=1024,sdk]", "steps_per_s", "otel.async[c=1024,absent]", "steps_per_s")
    ],
    "async 1024 OpenTelemetry SDK sampling 1 in 10, no-op exporter / absent": [
        ("otel.async[c=1024,sampled]", "steps_per_s", "otel.async[c=1024,absent]", "steps_per_s")
    ],
    "step cost 10^6 / 10^4 recorded": [
        ("growth.history[steps=1000000]", "us_per_step", "growth.history[steps=10000]", "us_per_step"),
        ("growth.history[steps=100000]", "us_per_step", "growth.history[steps=0]", "us_per_step"),
    ],
}


def child(name: str, workdir: Path, quick: bool) -> int:
    entry = REGISTRY[name]
    if entry.params.get("impl") == "python":
        os.environ["DURABLY_NO_EXTENSIONS"] = "1"  # before durably is first imported
    print(json.dumps(entry.fn(workdir, quick, **entry.params)))
    return 0


def run_one(name: str, workdir: Path, quick: bool, src: Path | None = None) -> dict[str, Any]:
    """One scenario in a fresh process; ``src``: import durably from that
    tree's ``src/`` instead (the other side of an --against pair)."""
    cmd = [sys.executable, str(HERE / "run.py"), "--scenario", name, "--dir", str(workdir)] + (
        ["--quick"] if quick else []
    )
    env = None if src is None else {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def environment(workdir: Path) -> dict[str, Any]:
    import apsw

    import durably

    def sh(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=HERE, timeout=10).stdout.strip()
        except OSError:
            return ""

    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "disk": sh("df", "-hT", str(workdir)).splitlines()[-1:] or [""],
        "sqlite": apsw.sqlite_lib_version(),
        "apsw": apsw.apsw_version(),
        "durably": durably.__version__,
        "implementation": durably.IMPLEMENTATION,
        "commit": sh("git", "rev-parse", "--short", "HEAD"),
        "dbos": _version("dbos"),
    }


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def summarise(raw: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, dict[str, float]]]:
    out = {}
    for name, runs in raw.items():
        keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
        out[name] = {
            k: {
                "median": statistics.median(r[k] for r in runs),
                "min": min(r[k] for r in runs),
                "max": max(r[k] for r in runs),
            }
            for k in keys
        }
    return out


# The figure compared for each scenario in an --against run.
PAIR_FIGURES = (
    "steps_per_s",
    "ops_per_s",
    "commits_per_s",
    "rows_per_s",
    "starts_per_s",
    "recovered_per_s",
    "peak_rss_mb",  # (lower is better: a ratio below 1 is this tree using less)
)


def _pair_keys(figures: dict[str, Any]) -> list[str]:
    """The figures a pair compares: the first of PAIR_FIGURES a scenario
    reports, else every one it reports per variant (``steps_per_s_2p`` ...)."""
    for key in PAIR_FIGURES:
        if key in figures:
            return [key]
    return [k for k in figures if any(k.startswith(f + "_") for f in PAIR_FIGURES)]


def against(names: list[str], other: Path, workdir: Path, reps: int, quick: bool) -> int:
    """Interleaved pairs: each repetition runs every scenario on this tree and
    on ``other`` (a checkout with its extension built in place) back to back,
    in random order, so machine noise hits both sides alike; prints each
    pair's ratio (this / other) and their median."""
    here_src, other_src = HERE.parent / "src", other.resolve() / "src"
    ratios: dict[str, list[float]] = {}
    for rep in range(reps):
        for name in random.sample(names, len(names)):
            sides = [("this", here_src), ("other", other_src)]
            random.shuffle(sides)
            got = {side: run_one(name, workdir, quick, src) for side, src in sides}
            for key in _pair_keys(got["this"]):
                label = name if key in PAIR_FIGURES else f"{name} {key}"
                ratios.setdefault(label, []).append(got["this"][key] / got["other"][key])
                print(
                    f"[{rep + 1}/{reps}] {label}: this {got['this'][key]:,.0f} {key}, other {got['other'][key]:,.0f}, "
                    f"ratio {ratios[label][-1]:.3f} ({' then '.join(s for s, _ in sides)})",
                    flush=True,
                )
    print(f"\nthis tree / {other} (median of {reps} interleaved pairs, min-max):")
    for label, rs in ratios.items():
        print(f"  {label:40s} {statistics.median(rs):.3f}  ({min(rs):.3f}-{max(rs):.3f})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help="directory for the databases (the disk under test)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per figure (default 5, quick 3)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: a subset, smaller sizes, 3 repetitions")
    parser.add_argument("--only", default="", help="comma-separated name patterns (fnmatch), e.g. 'durably.async*'")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument(
        "--against",
        type=Path,
        default=None,
        help="another checkout (extension built in place): run --only's scenarios on both trees "
        "in interleaved pairs and print this / other per pair",
    )
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    args = parser.parse_args()

    workdir = args.dir or Path(tempfile.mkdtemp(prefix="durably-bench-", dir=HERE))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.scenario:
        return child(args.scenario, workdir, args.quick)

    patterns = [p for p in args.only.split(",") if p]
    names = [
        n
        for n, e in REGISTRY.items()
        if (not patterns or any(fnmatch.fnmatch(n, p) for p in patterns))
        and (not args.quick or e.quick or patterns)
        and (not e.needs or importlib.util.find_spec(e.needs) is not None)
    ]
    if args.list:
        for n in REGISTRY:
            e = REGISTRY[n]
            print(
                f"{n:45s} group={e.group:15s} quick={e.quick} {'needs ' + e.needs if e.needs else ''}"
                f"{'' if n in names else '  (not selected)'}"
            )
        return 0
    reps = args.reps or (3 if args.quick else 5)
    if args.against is not None:
        return against(names, args.against, workdir, reps, args.quick)
    raw: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    ratio_runs: dict[str, list[float]] = {}

    from rich.progress import Progress

    with Progress() as progress:
        task = progress.add_task("benchmarks", total=reps * len(names))
        for rep in range(reps):
            order = names[:]
            random.shuffle(order)
            this: dict[str, dict[str, Any]] = {}
            for name in order:
                progress.update(task, description=f"[{rep + 1}/{reps}] {name}")
                this[name] = run_one(name, workdir, args.quick)
                raw[name].append(this[name])
                progress.advance(task)
            for label, choices in RATIOS.items():
                for a, ak, b, bk in choices:
                    if a in this and b in this:
                        ratio_runs.setdefault(f"{label} [{a} / {b}]", []).append(this[a][ak] / this[b][bk])
                        break

    summary = summarise(raw)
    ratios = {k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in ratio_runs.items()}
    out_dir = args.out / time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "environment": environment(workdir),
        "reps": reps,
        "quick": args.quick,
        "summary": summary,
        "ratios": ratios,
        "raw": raw,
        "ratio_runs": ratio_runs,
    }
    (out_dir / "results.json").write_text(json.dumps(result, indent=2))
    from report import charts, markdown

    md = markdown(result, charts(result, out_dir))
    (out_dir / "report.md").write_text(md)
    print(md)
    print(f"\nresults: {out_dir}")
    if not args.dir:
        for p in workdir.iterdir():
            p.unlink()
        workdir.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
