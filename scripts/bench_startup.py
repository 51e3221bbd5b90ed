#!/usr/bin/env python3
"""Start-up benchmark: `llmcalc params` (table and --json) against the imports each path cannot avoid.

Two pairs, each command against its floor, what any CLI built on the same libraries pays before
doing anything:
  table:  python -m llmcalc params --model llama-2-7b         vs  python -c "import typer, rich.console, rich.table, yaml"
  --json: python -m llmcalc params --model llama-2-7b --json  vs  python -c "import typer, yaml"
All four commands run interleaved, run by run, so that drift in the machine's load affects them
alike; each is reported as the median of its runs, each pair as a ratio (targets: table <= 1.25x,
--json <= 1.1x). llmcalc's modules are byte-compiled first, as `pip install` does for a wheel; an
editable checkout under PYTHONDONTWRITEBYTECODE=1 would otherwise recompile every module on every call.

Usage: python scripts/bench_startup.py [--runs 21]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

PARAMS = [sys.executable, "-m", "llmcalc", "params", "--model", "llama-2-7b"]
# (label, command, floor label, floor command, target ratio)
PAIRS = [
    ("table", PARAMS, "import typer, rich.console, rich.table, yaml",
     [sys.executable, "-c", "import typer, rich.console, rich.table, yaml"], 1.25),
    ("--json", PARAMS + ["--json"], "import typer, yaml", [sys.executable, "-c", "import typer, yaml"], 1.1),
]


def median_seconds(commands: list[list[str]], runs: int) -> list[float]:
    """Median wall time of each command, the commands interleaved run by run so that drift in
    the machine's load affects them alike."""
    for cmd in commands:  # warm the file cache
        subprocess.run(cmd, check=True, capture_output=True)
    times: list[list[float]] = [[] for _ in commands]
    for _ in range(runs):
        for cmd, bucket in zip(commands, times):
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    import llmcalc

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(llmcalc.__file__).parent)], check=True)
    commands = [cmd for _, ours, _, floor, _ in PAIRS for cmd in (floor, ours)]
    medians = iter(median_seconds(commands, args.runs))
    for label, ours, floor_label, _, target in PAIRS:
        floor_s, ours_s = next(medians), next(medians)
        print(f"{label}:")
        print(f"  floor  {floor_label:<52} {floor_s * 1e3:7.1f} ms")
        print(f"  llmcalc {' '.join(ours[3:]):<51} {ours_s * 1e3:7.1f} ms")
        ratio = ours_s / floor_s
        print(f"  ratio  {ratio:.2f}x (target <= {target}x: {'met' if ratio <= target else 'NOT met'})")
    print(f"(median of {args.runs} runs each, all four commands interleaved)")


if __name__ == "__main__":
    main()
