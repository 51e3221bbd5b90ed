#!/usr/bin/env python3
"""Serving benchmark: how long `latency` under load and `serve-plan` take to answer (issue 13 asks
under 50 ms per simulated query and under a second for the serve-plan question).

Each case runs in this process (imports paid once, as in a notebook or a sweep), best of --runs.

Usage: python scripts/bench_serving.py [--runs 5]
"""

from __future__ import annotations

import argparse
import time

import llmcalc

CASES = {
    "latency, 25 clients (NIM 70B fp8 TP 2)": lambda: llmcalc.latency(
        "llama-3.1-70b", gpu="h100", gpus=2, dtype="fp8", kv_dtype="fp8", prompt=5000, output=500, engine="trtllm",
        concurrency=25),
    "latency, 10 req/s (8B on one H100)": lambda: llmcalc.latency(
        "llama-3.1-8b", gpu="h100", prompt=2048, output=256, request_rate=10),
    "latency, calibrated under load": lambda: llmcalc.latency(
        "llama-3.1-70b", gpu="h100", gpus=2, dtype="fp8", kv_dtype="fp8", prompt=5000, output=500, engine="trtllm",
        concurrency=25, measured_ttft="688ms", measured_itl="38.8ms"),
}


def serve_plan() -> None:
    from llmcalc.presets import load_gpu, load_model
    from llmcalc.traffic import Load
    from llmcalc.serveplan import Traffic, plan

    plan(load_model("llama-3.1-70b"), [load_gpu("h100"), load_gpu("a100-80gb")],
         Traffic(Load(2048, 256, request_rate=10), ttft=1.0, tpot=0.05))


CASES["serve-plan, the issue's question"] = serve_plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for name, case in CASES.items():
        best = float("inf")
        for _ in range(args.runs):
            start = time.perf_counter()
            case()
            best = min(best, time.perf_counter() - start)
        print(f"{name:45} {best * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
