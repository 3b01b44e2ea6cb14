"""durably benchmarks: fsync and throughput profiling on local disk.

    python bench/run.py [--dir DIR] [--reps 5] [--quick] [--only a,b]

Every figure is a median over ``--reps`` repetitions, each in a fresh
process; repetitions of different scenarios are interleaved (shuffled per
round) so that machine noise hits them alike, and ratios (durably / raw
fdatasync) are computed per repetition within the same round.
Results go to ``bench/results/<time>.json`` and are printed as Markdown.
"""

from __future__ import annotations

import argparse
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scenarios import SCENARIOS  # noqa: E402

RATIOS = {
    "sequential/fdatasync": ("sequential", "steps_per_s", "fdatasync", "ops_per_s"),
    "sequential/sqlite_1row": ("sequential", "steps_per_s", "sqlite_1row", "commits_per_s"),
    "sqlite_1row/fdatasync": ("sqlite_1row", "commits_per_s", "fdatasync", "ops_per_s"),
}


def run_one(name: str, workdir: Path, quick: bool) -> dict:
    cmd = [sys.executable, str(HERE / "run.py"), "--scenario", name, "--dir", str(workdir)]
    if quick:
        cmd.append("--quick")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def environment() -> dict:
    import apsw

    import durably

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "sqlite": apsw.sqlite_lib_version(),
        "apsw": apsw.apsw_version(),
        "durably": durably.__version__,
        "implementation": durably.IMPLEMENTATION,
        "commit": commit,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help="directory for the databases (the disk under test)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller runs, 3 repetitions")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    args = parser.parse_args()

    workdir = args.dir or Path(tempfile.mkdtemp(prefix="durably-bench-", dir=HERE))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.scenario:  # child process: one repetition of one scenario
        print(json.dumps(SCENARIOS[args.scenario](workdir, args.quick)))
        return 0

    names = [n for n in SCENARIOS if not args.only or n in args.only.split(",")]
    reps = 3 if args.quick and args.reps == 5 else args.reps
    raw: dict[str, list[dict]] = {n: [] for n in names}
    ratios: dict[str, list[float]] = {r: [] for r in RATIOS}
    for rep in range(reps):
        order = names[:]
        random.shuffle(order)
        this_round = {}
        for name in order:
            print(f"[{rep + 1}/{reps}] {name} ...", file=sys.stderr, flush=True)
            this_round[name] = run_one(name, workdir, args.quick)
            raw[name].append(this_round[name])
        for rname, (a, ak, b, bk) in RATIOS.items():
            if a in this_round and b in this_round:
                ratios[rname].append(this_round[a][ak] / this_round[b][bk])

    summary = {}
    for name, runs in raw.items():
        keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
        summary[name] = {k: {"median": statistics.median(r[k] for r in runs), "min": min(r[k] for r in runs),
                             "max": max(r[k] for r in runs)} for k in keys}
    ratio_summary = {k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in ratios.items() if v}
    result = {"environment": environment(), "reps": reps, "quick": args.quick, "summary": summary,
              "ratios": ratio_summary, "raw": raw}
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / time.strftime("%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps(result, indent=2))

    print(f"\n{reps} repetitions per figure, fresh process each, interleaved; median (min-max)\n")
    print("| scenario | figure | median | min | max |\n|---|---|---|---|---|")
    for name, figs in summary.items():
        for k, v in figs.items():
            print(f"| {name} | {k} | {v['median']:,.1f} | {v['min']:,.1f} | {v['max']:,.1f} |")
    for k, v in ratio_summary.items():
        print(f"| ratio | {k} | {v['median']:.2f} | {v['min']:.2f} | {v['max']:.2f} |")
    print(f"\nraw results: {out}")
    if not args.dir:
        for p in workdir.iterdir():
            p.unlink()
        workdir.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
