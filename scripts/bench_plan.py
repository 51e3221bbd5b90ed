#!/usr/bin/env python3
"""Planner benchmark: layouts timed per second on one core, and how long whole plans take (issue 14 asks
at least 100,000 layouts a second, so that a plan for thousands of GPUs answers in about a second).

Each case runs in this process (imports paid once), best of --runs.

Usage: python scripts/bench_plan.py [--runs 3]
"""

from __future__ import annotations

import argparse
import time

from llmcalc.cluster import load_cluster
from llmcalc.plan import Constraints, Planner, Target, degree_tuples, variants
from llmcalc.trainplan import plan_breakdown
from llmcalc.presets import load_model

CASES = {  # model, cluster, GPUs, seq, global batch (sequences)
    "Llama-3.1-405B on 16,384 H100 (Llama 3's pre-training)": ("llama-3.1-405b", "dgx-h100", 16384, 8192, 2048),
    "Llama-3-70B on 512 H100": ("llama-3-70b", "dgx-h100", 512, 8192, 512),
    "Mixtral-8x7B on 256 H100 (EP searched)": ("mixtral-8x7b", "dgx-h100", 256, 4096, 1024),
    "Llama-3.1-8B on 64 A100": ("llama-3.1-8b", "dgx-a100", 64, 8192, 512),
}


def rate(model: str, cluster: str, gpus: int, seq: int, batch: int) -> tuple[int, float]:
    """Layouts and seconds to time every layout of the plan (the step-time model alone)."""
    m, cl = load_model(model), load_cluster(cluster)
    t, c = Target(gpus=gpus, seq=seq, global_batch=batch), Constraints()
    p = Planner(m, cl, t, c)
    layouts = [lay for deg in degree_tuples(m, cl.gpus_per_node, t, c) for lay in variants(m, t, c, deg)]
    for lay in layouts[:50]:  # the per-stage gradient counts, computed once per (tp, pp, ep) as a plan does
        p.grads(lay)
    start = time.perf_counter()
    for lay in layouts:
        p.time(lay)
    return len(layouts), time.perf_counter() - start


def whole(model: str, cluster: str, gpus: int, seq: int, batch: int) -> tuple[int, float]:
    """A whole plan, as `llmcalc plan` runs it: enumerate, time, check memory lazily, rank."""
    m, cl = load_model(model), load_cluster(cluster)
    start = time.perf_counter()
    b = plan_breakdown(m, cl, Target(gpus=gpus, seq=seq, global_batch=batch), Constraints())
    return b.summary["evaluated"], time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    print(f"{'case':56s} {'layouts':>8s} {'timed/s':>10s} {'plan':>8s}")
    for name, case in CASES.items():
        n, seconds = min((rate(*case) for _ in range(args.runs)), key=lambda x: x[1])
        _, plan_s = min((whole(*case) for _ in range(args.runs)), key=lambda x: x[1])
        print(f"{name:56s} {n:8,d} {n / seconds:10,.0f} {plan_s:7.2f}s")


if __name__ == "__main__":
    main()
