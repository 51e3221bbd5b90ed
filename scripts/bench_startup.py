#!/usr/bin/env python3
"""Start-up benchmark: `llmcalc params --model llama-2-7b` against the import floor.

The floor is `python -c "import typer, rich, yaml"`: what any CLI built on these libraries pays
before doing anything. Reports the median of several runs of each and their ratio (target <= 1.3).
llmcalc's modules are byte-compiled first, as `pip install` does for a wheel; an editable checkout
under PYTHONDONTWRITEBYTECODE=1 would otherwise recompile every module on every call.

Usage: python scripts/bench_startup.py [--runs 15] [--llmcalc PATH]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


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
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--llmcalc", default=shutil.which("llmcalc") or "llmcalc")
    args = parser.parse_args()
    import llmcalc

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(llmcalc.__file__).parent)], check=True)
    floor, ours = median_seconds([[sys.executable, "-c", "import typer, rich, yaml"],
                                  [args.llmcalc, "params", "--model", "llama-2-7b"]], args.runs)
    print(f"import floor (typer, rich, yaml): {floor * 1e3:7.1f} ms")
    print(f"llmcalc params --model llama-2-7b: {ours * 1e3:7.1f} ms")
    print(f"ratio: {ours / floor:.2f}x (target <= 1.3x; median of {args.runs} runs)")


if __name__ == "__main__":
    main()
