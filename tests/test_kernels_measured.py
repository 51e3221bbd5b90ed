"""The step-time model's compute rates against kernels we timed on an H100 and an H200 (tests/data/gpu_kernels.json,
written by scripts/measure_kernels_cuda.py): the layers' GEMMs at the published runs' shapes in bf16 and FP8, the
attention kernels' forward, and whole Llama blocks in plain PyTorch."""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

import pytest

from llmcalc import steptime
from llmcalc.cluster import cluster_of
from llmcalc.plan import links_of
from llmcalc.presets import load_gpu, load_model

DATA = json.loads((Path(__file__).parent / "data" / "gpu_kernels.json").read_text())
RUNS = DATA["runs"]
GPUS = {"NVIDIA H200": load_gpu("h200"), "NVIDIA H100 80GB HBM3": load_gpu("h100-sxm")}
LINEARS = {"qkv", "proj", "fc1", "fc2"}


def _gpt3_175b():
    """GPT-3 175B (Brown et al. 2020, Table 2.1): 96 layers of width 12288, 96 heads, a plain 4x MLP."""
    return dataclasses.replace(load_model("gpt2-xl"), hidden_size=12288, num_hidden_layers=96, num_attention_heads=96,
                               num_key_value_heads=96, intermediate_size=49152)


MODELS = {"llama-3-8b": lambda: load_model("llama-3-8b"), "llama-3-70b": lambda: load_model("llama-3-70b"),
          "llama-3.1-405b": lambda: load_model("llama-3.1-405b"), "gpt3-175b": _gpt3_175b}


def _layers():
    """(run, model, tp) of each layer whose four linears were timed at the model's own shapes."""
    for i, run in enumerate(RUNS):
        for name, tp in sorted({(g["model"], g["tp"]) for g in run["gemms"]}):
            if {g["linear"] for g in run["gemms"] if (g["model"], g["tp"]) == (name, tp)} == LINEARS:
                yield i, name, tp


LAYERS = list(_layers())


def test_the_data_is_what_the_script_writes():
    assert DATA["script"] == "scripts/measure_kernels_cuda.py" and {r["device"] for r in RUNS} == set(GPUS)
    for run in RUNS:
        assert all(g["flops"] == 2 * g["m"] * g["n"] * g["k"] for g in run["gemms"])
        assert len(run["gemms"]) == 3 * 4 * 7  # fprop, dgrad, wgrad of 4 linears of 7 (model, tp) layers
    assert len(LAYERS) == 7 + 6 + 6  # the H200 runs' GPT-3 fc1 was timed 2 x ffn wide


@pytest.mark.parametrize("run,name,tp", LAYERS, ids=[f"{RUNS[i]['device'][7:11]}-{i}-{n}-tp{t}" for i, n, t in LAYERS])
def test_a_layers_gemms_take_the_measured_time(run, name, tp):
    """One layer's twelve GEMMs (fused QKV, output projection, fc1, fc2; forward, data and weight gradients) at
    8192 tokens: the planner's time for them (MATMUL_EFFICIENCY of the bf16 peak) within 10% of their sum."""
    measured = sum(g["bf16_s"] for g in RUNS[run]["gemms"] if g["model"] == name and g["tp"] == tp)
    m = MODELS[name]()
    mb = steptime.micro_batch(steptime.model_cost(m, 8192), links_of(cluster_of(GPUS[RUNS[run]["device"]]), "bf16"),
                              steptime.Layout(tp=tp, pp=1, dp=1), 8192)
    assert 3 * mb.gemm / m.num_hidden_layers == pytest.approx(measured, rel=0.10)


@pytest.mark.parametrize("run", range(len(RUNS)))
def test_matmul_efficiency_is_the_measured_share_of_the_training_gemms(run):
    gpu, gemms = GPUS[RUNS[run]["device"]], RUNS[run]["gemms"]
    share = sum(g["flops"] for g in gemms) / sum(g["bf16_s"] for g in gemms) / gpu.peak("bf16")
    assert steptime.matmul_efficiency("bf16", gpu) == pytest.approx(share, rel=0.05)  # 0.67-0.69


@pytest.mark.parametrize("run", range(len(RUNS)))
def test_fp8_gemms_gain_the_measured_factor(run):
    """The planner's FP8 GEMM rate over its bf16 rate (the preset's best-shape MAMF ratio) against the time the
    same GEMMs took in bf16 over FP8 (torch._scaled_mm with per-tensor scales: cuBLASLt's TN FP8 GEMM, which
    Transformer Engine runs on Hopper)."""
    gpu, gemms = GPUS[RUNS[run]["device"]], RUNS[run]["gemms"]
    gain = sum(g["bf16_s"] for g in gemms) / sum(g["fp8_s"] for g in gemms)  # 1.79-1.84
    planned = (steptime.matmul_efficiency("fp8", gpu) * gpu.peak("fp8")
               / (steptime.matmul_efficiency("bf16", gpu) * gpu.peak("bf16")))
    assert planned == pytest.approx(gain, rel=0.05)


@pytest.mark.parametrize("kernel,backend", [("cudnn", "cudnn"), ("fa2", "flash2")])
def test_attention_forward_share_matches_the_kernel(kernel, backend):
    """The presets' forward share (read off the FlashAttention-3 paper) against PyTorch's cuDNN and
    FlashAttention-2 backends, causal, head dim 128, 4k-16k tokens: the median of the runs within 12%."""
    for device, gpu in GPUS.items():
        shares = [r["causal_forward_flops"] / r["forward_s"] / gpu.peak("bf16")
                  for run in RUNS if run["device"] == device for r in run["attention"]
                  if r["backend"] == backend and r["head_dim"] == 128 and r["seq"] >= 4096]
        assert len(shares) >= 6
        assert steptime.attention_figure(gpu, kernel)[1] == pytest.approx(statistics.median(shares), rel=0.12)


BLOCKS = [r for run in RUNS for r in run.get("blocks", ())]


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{b['model']}-{b['backend']}-{b['batch']}x{b['seq']}" for b in BLOCKS])
def test_a_blocks_compute_is_near_a_plain_pytorch_block(block):
    """A Llama block (8B whole, 70B's share of 8 TP ranks, no sequence parallelism) in eager PyTorch on an H100,
    forward + backward: the planner's GEMMs, attention and memory-bound kernels for it within 20%. The planner
    is the slower, most at 8k tokens: its fitted ATTENTION_EFFICIENCY (0.41) is below what the kernels do
    (test_attention_backward_runs_faster_than_the_fit), carrying costs the survey's runs have beyond them."""
    name, tp = ("llama-3-8b", 1) if block["model"] == "llama-3-8b" else ("llama-3-70b", 8)
    m = load_model(name)
    links = links_of(cluster_of(GPUS["NVIDIA H100 80GB HBM3"]), "bf16", "cudnn" if block["backend"] == "cudnn" else "fa2")
    mb = steptime.micro_batch(steptime.model_cost(m, block["seq"]), links,
                              steptime.Layout(tp=tp, pp=1, dp=1, micro_batch=block["batch"]), block["seq"])
    planned = 3 * (mb.gemm + mb.attention + mb.elementwise) / m.num_hidden_layers
    assert block["forward_backward_s"] <= planned <= 1.2 * block["forward_backward_s"]


def test_attention_backward_runs_faster_than_the_fit():
    """What the kernels do forward and backward (3 x the forward's FLOPs) against their forward alone: 0.65-0.85
    (median 0.74) for both backends at head dim 128 and 4k-16k tokens, above the fitted 0.41 (steptime's
    comment says what that fit carries). Pinned so a refit that reaches the kernels' figure is noticed."""
    ratios = [3 * r["forward_s"] / r["forward_backward_s"] for run in RUNS for r in run["attention"]
              if r["head_dim"] == 128 and r["seq"] >= 4096 and "error" not in r]
    assert 0.65 <= min(ratios) and max(ratios) <= 0.85
    assert steptime.ATTENTION_EFFICIENCY < statistics.median(ratios)


SUSTAINED = json.loads((Path(__file__).parent / "data" / "gpu_sustained.json").read_text())


@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_gemm_efficiency_is_the_rate_an_h100_sustains(dtype):
    """Training keeps the tensor cores busy for minutes: an H100 SXM's 8192-cube GEMMs start at the boost clock
    (the MAMF figure the preset records) and within a second hit the 700 W limit, which holds the SM clock near
    1.35 GHz (bf16) or 1.25 GHz (fp8) and the rate 13-14% lower. The planner's GEMM shares are that sustained
    rate's (bf16 0.69 of the dense peak, fp8 0.62), within 3%."""
    h100 = GPUS["NVIDIA H100 80GB HBM3"]
    rows = SUSTAINED[dtype]
    burst, held = rows[0], [r for r in rows if r["t"] >= 5]
    assert burst["tflops"] * 1e12 == pytest.approx(h100.matmul_flops[dtype], rel=0.03)  # MAMF: 794.5, 1402.6
    assert all(r["power_w"] >= 0.98 * SUSTAINED["power_limit_w"] for r in held)
    rate = statistics.median(r["tflops"] for r in held) * 1e12  # 682 and 1231 TFLOP/s
    assert rate < 0.9 * burst["tflops"] * 1e12
    assert steptime.matmul_efficiency(dtype, h100) == pytest.approx(rate / h100.peak(dtype), rel=0.03)
