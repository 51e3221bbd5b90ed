#!/usr/bin/env python3
"""Sweep benchmark: 10,000-point `--sweep`s through the real CLI process, against the core alone.

Each case runs `llmcalc ... --sweep NAME=v1,v2,...,v10000 --json` (a doubling range cannot give
10,000 points, so the values are a generated list) and reports the median wall time of several
runs, start-up included; the target is under a second each (issue 10). For reference it also times,
in this process, the core function alone over the same points (each point's settings made as the
CLI makes them): the floor a sweep cannot go below without changing the core.

Usage: python scripts/bench_sweep.py [--runs 3] [--points 10000] [--llmcalc PATH] [--all]
(--all adds the searches and the decode loop: max-batch over seq, max-seq over batch, latency
over batch; no target for those.)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODEL, GPU = "llama-3.1-8b", "h100"


def batches(n: int) -> list[int]:
    return list(range(1, n + 1))


def seqs(n: int) -> list[int]:
    return [8 * i for i in range(1, n + 1)]  # 8 .. 80,000 tokens: inside llama-3.1-8b's context


def _memory_core(mode: str, swept: str):
    from llmcalc.memory import MemorySettings, memory_breakdown
    from llmcalc.presets import load_gpu, load_model
    from llmcalc.spec import Parallelism

    m, g = load_model(MODEL), load_gpu(GPU)
    settings = MemorySettings(mode=mode, seq=8192, parallel=Parallelism.resolve(mode=mode))
    return lambda value: memory_breakdown(m, g, settings.at(**{swept: value}))  # as the CLI builds each point's


def _flops_core():
    from llmcalc.flops import FlopsSettings, flops_breakdown
    from llmcalc.presets import load_model

    m = load_model(MODEL)
    return lambda seq: flops_breakdown(m, FlopsSettings(seq=seq, efficiency=0.4), None)


def _latency_core():
    from llmcalc.presets import load_gpu, load_model
    from llmcalc.throughput import ServeSettings, latency_breakdown

    m, g = load_model(MODEL), load_gpu(GPU)
    return lambda batch: latency_breakdown(m, g, ServeSettings(batch=batch, prompt=1024, output=256))


# (name, command-line arguments before --sweep, swept option, values, core for one point or None)
CASES = [
    ("memory train over batch", ["memory", "--model", MODEL, "--gpu", GPU], "batch", batches,
     lambda: _memory_core("train", "batch")),
    ("memory infer over batch", ["memory", "--model", MODEL, "--gpu", GPU, "--mode", "infer"], "batch", batches,
     lambda: _memory_core("infer", "batch")),
    ("memory train over seq", ["memory", "--model", MODEL, "--gpu", GPU], "seq", seqs,
     lambda: _memory_core("train", "seq")),
    ("flops over seq", ["flops", "--model", MODEL], "seq", seqs, _flops_core),
]
EXTRA = [
    ("latency over batch", ["latency", "--model", MODEL, "--gpu", GPU], "batch", batches, _latency_core),
    ("max-batch over seq", ["max-batch", "--model", MODEL, "--gpu", GPU], "seq", seqs, None),
    ("max-seq over batch", ["max-seq", "--model", MODEL, "--gpu", GPU], "batch", batches, None),
]


def wall(cmd: list[str], runs: int) -> tuple[float, float]:
    """Median wall and CPU (user + system) seconds of ``cmd``, its output read and dropped as a pipe
    would; the CPU time says what the wall time would be on an idle machine."""
    import resource

    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode not in (0, 1):
            sys.exit(f"{' '.join(cmd[:8])} ... failed:\n{done.stderr.decode()[-2000:]}")
    return statistics.median(walls), statistics.median(cpus)


def core_seconds(make, values: list[int]) -> float:
    """The core over ``values``, the answers kept and the collector off as a sweep has them."""
    import gc

    point = make()
    point(values[0])  # modules imported, presets loaded
    kept, start = [], time.perf_counter()
    gc.disable()
    try:
        for value in values:
            kept.append(point(value))
    finally:
        gc.enable()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--llmcalc", default=shutil.which("llmcalc") or "llmcalc")
    parser.add_argument("--all", action="store_true", help="also the searches and latency (slow, no target)")
    args = parser.parse_args()
    import llmcalc

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(llmcalc.__file__).parent)], check=True)
    start, cpu = wall([args.llmcalc, "params", "--model", MODEL, "--json"], args.runs)
    print(f"{'start-up (params, one point)':40s} {start:6.2f} s wall, {cpu:5.2f} s cpu")
    for name, head, swept, values, core in CASES + (EXTRA if args.all else []):
        points = values(args.points)
        cmd = [args.llmcalc, *head, "--sweep", f"{swept}=" + ",".join(map(str, points)), "--json"]
        seconds, cpu = wall(cmd, args.runs)
        floor = f"; core alone {core_seconds(core, points) / len(points) * 1e6:6.1f} us/point" if core else ""
        verdict = "" if head in [case[1] for case in EXTRA] else "  ok" if seconds < 1 else "  over 1 s"
        print(f"{name + f' ({len(points):,} points)':40s} {seconds:6.2f} s wall, {cpu:5.2f} s cpu{floor}{verdict}")


if __name__ == "__main__":
    main()
