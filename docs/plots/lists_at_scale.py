"""Draws docs/lists-at-scale.png from the "Lists at scale" tables of docs/benchmarks.md.

    python3 -m venv /tmp/plot && /tmp/plot/bin/pip install matplotlib
    /tmp/plot/bin/python docs/plots/lists_at_scale.py
"""

import pathlib
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DOCS = pathlib.Path(__file__).resolve().parent.parent
SIZES = [10_000, 100_000, 1_000_000]
CELL = re.compile(r"([\d,]+) \(([\d.]+) ms\) · ([\d.]+) ms")


def tables():
    """{backend: {request: [(rate, p99, single), ...per size]}} from the two tables."""
    text = (DOCS / "benchmarks.md").read_text()
    section = text.split("## Lists at scale")[1].split("\n## ")[0]
    found = {}
    for backend in ("SQLite", "PostgreSQL"):
        block = section.split(f"**{backend}**")[1].split("\n\n")[1]
        rows = {}
        for line in block.splitlines()[2:]:
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cells[0].startswith("feed"):
                continue
            values = [CELL.match(c) for c in cells[1:]]
            if all(values):
                rows[cells[0].replace("`", "")] = [
                    (float(m[1].replace(",", "")), float(m[2]), float(m[3])) for m in values
                ]
        found[backend] = rows
    return found


def main():
    data = tables()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    for col, (backend, rows) in enumerate(data.items()):
        for request, values in rows.items():
            axes[0][col].plot(SIZES, [v[0] for v in values], marker="o", label=request)
            axes[1][col].plot(SIZES, [v[2] for v in values], marker="o", label=request)
        axes[0][col].set_title(f"{backend}: requests/s at 64 connections")
        axes[1][col].set_title(f"{backend}: one request alone, p50 (ms)")
        axes[0][col].axhline(2000, color="grey", linestyle="--", linewidth=1)
        axes[1][col].axhline(5, color="grey", linestyle="--", linewidth=1)
        for row in axes:
            row[col].set_xscale("log")
            row[col].set_ylim(bottom=0)
            row[col].set_xlabel("posts in the archive")
            row[col].grid(True, alpha=0.3)
    axes[1][0].legend(fontsize=8, loc="upper left")
    fig.suptitle("Every list variant against archive size (dashed: issue 14's targets)")
    fig.tight_layout()
    fig.savefig(DOCS / "lists-at-scale.png", dpi=80)


if __name__ == "__main__":
    main()
