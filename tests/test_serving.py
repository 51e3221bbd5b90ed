"""The expected serving latency against published measurements (tests/data/serving_measured.yaml).

Each point is run with the settings its `llmcalc` block gives; the expected TTFT and TPOT must lie
within 25% of the measurements at the median (issue 13), and the roofline bound below every one.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import yaml

import llmcalc
from llmcalc.dtypes import DTYPE_BYTES, activation_dtype, matmul_dtype
from llmcalc.presets import load_gpu, load_model
from llmcalc.serving import BAND, Efficiencies, Workload, bandwidth_efficiency, expected, resolve

POINTS = yaml.safe_load((Path(__file__).parent / "data" / "serving_measured.yaml").read_text())


def predicted(point: dict):
    c = point["llmcalc"]
    gpu = load_gpu(c["gpu"])
    dtype = c["dtype"]
    r = resolve(Efficiencies(request_overhead=c.get("request_overhead")), c["engine"], dtype, matmul_dtype(dtype),
                gpu.interconnect_bandwidth > 100e9)
    w = Workload(requests=1, prompt=point["prompt"], output=point["output"], tp=c["tp"], dtype=dtype,
                 compute_dtype=matmul_dtype(dtype), kv_dtype=activation_dtype(dtype),
                 act_bytes=DTYPE_BYTES[activation_dtype(dtype)], chunk=c.get("chunk"))
    return expected(load_model(c["model"]), gpu, w, r)


def pairs() -> list[tuple[str, str, float, float]]:
    """(id, ttft|tpot, measured s, expected s) for every measured value."""
    out = []
    for point in POINTS:
        x = predicted(point)
        for key, value in (("ttft", x.ttft), ("tpot", x.tpot)):
            if f"{key}_ms" in point["measured"]:
                out.append((point["id"], key, point["measured"][f"{key}_ms"] / 1e3, value))
    return out


def test_the_data_holds_twenty_points_with_sources():
    assert len(pairs()) >= 20
    assert all(point["source"].startswith("https://") for point in POINTS)


def test_expected_latency_is_within_25_percent_at_the_median():
    errors = [abs(measured / value - 1) for _, _, measured, value in pairs()]
    assert statistics.median(errors) <= 0.25, sorted(round(e, 2) for e in errors)


def test_most_measurements_fall_in_the_band():
    inside = [BAND[0] * value <= measured <= BAND[1] * value for _, _, measured, value in pairs()]
    assert sum(inside) >= 0.75 * len(inside)


@pytest.mark.parametrize("point", POINTS, ids=[p["id"] for p in POINTS])
def test_the_roofline_bound_stays_below_every_measurement(point):
    c = point["llmcalc"]
    b = llmcalc.latency(c["model"], gpu=c["gpu"], gpus=c["gpus"], tp=c["tp"], dtype=c["dtype"],
                        prompt=point["prompt"], output=max(point["output"], 2))
    for key in ("ttft", "tpot"):
        if f"{key}_ms" in point["measured"]:
            bound = b.summary.get(f"{key}_bound", b.summary[key])
            assert bound <= point["measured"][f"{key}_ms"] / 1e3, (key, bound)


def test_efficiencies_are_fractions_of_peak():
    for dtype in ("bf16", "fp8", "int8", "int4", "q8_0", "q6_k", "q4_k_m", "q4_0", "q2_k"):
        assert 0 < bandwidth_efficiency(dtype) < 1
    assert bandwidth_efficiency("q4_0") < bandwidth_efficiency("q4_k_m") < bandwidth_efficiency("q8_0")


def test_a_decode_step_by_hand():
    """Llama-3.1-8B bf16 on one H100, vLLM, 256 in / 128 out: weights 2 B x (8.03e9 - 525e6 embedding
    lookup) plus 320 positions of KV at 131,072 B each, at 0.9 of 3.35 TB/s, plus 32 layers x 50 us."""
    point = {"llmcalc": {"model": "llama-3.1-8b", "gpu": "h100-sxm", "dtype": "bf16", "engine": "vllm", "tp": 1},
             "prompt": 256, "output": 128}
    weights = 2 * (8_030_261_248 - 128_256 * 4096)
    kv = round(256 + 127 / 2) * 131_072
    assert predicted(point).tpot == pytest.approx((weights + kv) / (3.35e12 * 0.9) + 32 * 50e-6, rel=1e-3)
