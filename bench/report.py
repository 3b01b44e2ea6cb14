"""The Markdown report and PNG charts of one bench run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any


def markdown(result: dict[str, Any], charts: list[str]) -> str:
    env = result["environment"]
    lines = (
        [
            "# durably benchmark report",
            "",
            f"{result['reps']} repetitions per figure, each in a fresh process, scenarios shuffled per repetition; "
            "median (min-max). Ratios are computed per repetition, then summarised.",
            "",
            "| environment | |",
            "|---|---|",
        ]
        + [f"| {k} | {v} |" for k, v in env.items()]
        + ["", "| scenario | figure | median | min | max |", "|---|---|---|---|---|"]
    )
    for name, figs in result["summary"].items():
        for k, v in figs.items():
            lines.append(f"| {name} | {k} | {v['median']:,.1f} | {v['min']:,.1f} | {v['max']:,.1f} |")
    if result["ratios"]:
        lines += ["", "| ratio (per repetition) | median | min | max |", "|---|---|---|---|"]
        for k, v in result["ratios"].items():
            lines.append(f"| {k} | {v['median']:.2f} | {v['min']:.2f} | {v['max']:.2f} |")
    lines += [""] + [f"![{c}]({c})" for c in charts]
    return "\n".join(lines) + "\n"


def _param(name: str, key: str) -> int | None:
    m = re.search(rf"{key}=(\d+)", name)
    return int(m.group(1)) if m else None


def charts(result: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["summary"]
    made = []
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    series = {
        "durably async, full": ("durably.async[c=", ",full]", "steps_per_s"),
        "durably async, normal": ("durably.async[c=", ",normal]", "steps_per_s"),
        "durably threads, full": ("durably.threads[c=", ",full]", "steps_per_s"),
        "DBOS (SQLite) async": ("dbos.async[c=", ",full]", "steps_per_s"),
    }
    for label, (prefix, suffix, fig_key) in series.items():
        pts = sorted(
            (_param(n, "c"), v[fig_key]["median"])
            for n, v in s.items()
            if n.startswith(prefix) and n.endswith(suffix) and fig_key in v
        )
        if label.startswith("durably") and "durably.sequential[full]" in s and "async" in label and "full" in label:
            pts = [(1, s["durably.sequential[full]"]["steps_per_s"]["median"])] + pts
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    raw = sorted((_param(n, "rows"), v["rows_per_s"]["median"]) for n, v in s.items() if n.startswith("sqlite.commit"))
    if raw:
        ax.plot(
            [p[0] for p in raw],
            [p[1] for p in raw],
            marker="s",
            linestyle="--",
            label="raw SQLite rows/s (x = rows per commit)",
        )
    if "disk.fdatasync[append]" in s:
        ax.axhline(
            s["disk.fdatasync[append]"]["ops_per_s"]["median"], color="grey", linestyle=":", label="disk fdatasync/s"
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent workflows (1 = one sequential workflow)")
    ax.set_ylabel("durable steps per second")
    ax.set_title("Throughput against concurrency, synchronous=full")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "throughput.png", dpi=110)
    plt.close(fig)
    made.append("throughput.png")

    lat = [(n, v) for n, v in s.items() if "ack_p50_us" in v]
    if lat:
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        labels = [n.replace("durably.", "") for n, _ in lat]
        x = range(len(lat))
        ax.bar([i - 0.2 for i in x], [v["ack_p50_us"]["median"] for _, v in lat], width=0.4, label="p50")
        ax.bar([i + 0.2 for i in x], [v["ack_p99_us"]["median"] for _, v in lat], width=0.4, label="p99")
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("step acknowledgement latency (us)")
        ax.set_title("Latency percentiles: step call to durable outcome")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "latency.png", dpi=110)
        plt.close(fig)
        made.append("latency.png")
    return made
