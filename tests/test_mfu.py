"""MFU against published utilisation figures (notebook, PaLM, MPT-7B, the article's Llama 3)."""

from __future__ import annotations

import pytest

from llmcalc.params import count
from llmcalc.presets import load_gpu, load_model
from llmcalc.spec import ModelSpec, SpecError
from llmcalc.utilization import Measurement, mfu_breakdown

from .conftest import run, run_json, value


def test_notebook_37_percent():
    # nanoGPT notebook: batch 100 x 1024 tokens in 0.755 s on one A100 (312 TFLOP/s) -> 37.14%
    data = run_json("mfu", "--model", "nanogpt-124m", "--gpu", "a100-80gb", "--seq", "1024",
                    "--batch", "100", "--step-time", "0.755")
    assert value(data, "mfu") == pytest.approx(0.3714, abs=0.001)
    detailed = run_json("mfu", "--model", "nanogpt-124m", "--gpu", "a100-80gb", "--seq", "1024",
                        "--batch", "100", "--step-time", "0.755", "--formula", "detailed")
    # the notebook's own arithmetic: 874,944,921,600 FLOP x 100 / 0.755 s / 312e12
    assert value(detailed, "mfu") == pytest.approx(874_944_921_600 * 100 / 0.755 / 312e12)


def test_llama3_article_exercise_1():
    # 15T tokens x (6N + 12·L·H·S) over 6.4M H100-hours at 989 TFLOP/s: the article gets 31.9%
    # with N rounded to 70e9; the exact N (untied input embedding left out) gives ~31.7%.
    data = run_json("mfu", "--model", "llama-3-70b", "--gpu", "h100-sxm", "--seq", "8192",
                    "--tokens", "15T", "--gpu-hours", "6.4M", "--formula", "palm")
    n = 70_553_706_496 - 128256 * 8192
    per_token = 6 * n + 12 * 80 * 8192 * 8192
    assert value(data, "mfu") == pytest.approx(15e12 * per_token / (6.4e6 * 3600 * 989.4e12))
    assert 0.314 <= value(data, "mfu") <= 0.324


def _palm_540b() -> ModelSpec:
    # PaLM (Chowdhery et al. 2022, Table 1): 118 layers, d 18432, 48 heads of 256, multi-query,
    # SwiGLU with 4d, parallel blocks, shared input/output embedding, 256k vocab, no biases.
    return ModelSpec(name="palm-540b", hidden_size=18432, num_hidden_layers=118, num_attention_heads=48,
                     num_key_value_heads=1, head_dim=256, vocab_size=256000, intermediate_size=4 * 18432,
                     max_position_embeddings=2048, mlp_type="gated", norm_type="layernorm",
                     norms_per_layer=1, parallel_attn=True, position_embedding="rotary",
                     tie_word_embeddings=True, attention_bias=False, attention_out_bias=False, mlp_bias=False)


def test_palm_540b_46_percent():
    m = _palm_540b()
    assert count(m)["total"] == pytest.approx(540.35e9, rel=1e-4)
    tpu_v4 = load_gpu("tpu-v4")  # 275 TFLOP/s bf16
    b = mfu_breakdown(m, tpu_v4, Measurement(tokens_per_s=238.3e3), seq=2048, gpus=6144)
    assert b.value("mfu") == pytest.approx(0.462, abs=0.001)


def test_mpt_7b_46_percent():
    # llm-foundry benchmarks: MPT-7B, seq 2048, 8 x H100 at 10,643 tokens/s/GPU -> MFU 46.44%
    # (6N + 12·L·d·s per token, peak 989.5). MPT: d 4096, 32 layers, 4x MLP, ALiBi, no biases.
    m = ModelSpec(name="mpt-7b", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                  vocab_size=50432, intermediate_size=16384, max_position_embeddings=2048,
                  mlp_type="plain", norm_type="layernorm", position_embedding="alibi",
                  tie_word_embeddings=True, attention_bias=False, attention_out_bias=False, mlp_bias=False)
    b = mfu_breakdown(m, load_gpu("h100-sxm"), Measurement(tokens_per_s=10_643, per_gpu=True),
                      seq=2048, gpus=8)
    assert b.value("mfu") == pytest.approx(0.4644, abs=0.002)


def test_full_recompute_hfu_is_four_thirds():
    # llm-foundry: HFU = MFU x 4/3 under full activation checkpointing (6nd counting)
    b = mfu_breakdown(load_model("gpt2"), load_gpu("a100-80gb"), Measurement(step_time=1.0), seq=1024,
                      batch=8, formula="6nd", recompute="full")
    assert b.value("hfu") == pytest.approx(b.value("mfu") * 4 / 3)


def test_measurement_must_be_one_rate():
    with pytest.raises(SpecError, match="exactly one"):
        Measurement(step_time=1.0, tokens_per_s=5.0)
    with pytest.raises(SpecError, match="needs --tokens"):
        Measurement(gpu_hours=10.0)
    result = run("mfu", "--model", "gpt2", "--gpu", "a100", "--seq", "1024")
    assert result.exit_code == 2 and "exactly one" in result.stderr


def test_an_hfu_above_the_peak_is_refused_as_an_mfu_above_it_is():
    """Llama-3-70B, 16 x 8,192 tokens in 10.5 s on 8 H100s: MFU 0.759, and full recomputation re-runs the layers'
    forward (about a third more FLOPs), HFU 1.01: impossible, so the measurement or --recompute is wrong."""
    args = ("mfu", "--model", "llama-3-70b", "--gpu", "h100-sxm", "--seq", "8192", "--batch", "16", "--gpus", "8")
    out = run(*args, "--step-time", "10.5", "--recompute", "full")
    assert out.exit_code == 2 and "HFU comes out as 1.01" in out.stderr and "check --recompute" in out.stderr
    assert value(run_json(*args, "--step-time", "10.5"), "mfu") == pytest.approx(0.759, abs=5e-4)


def test_a_gpu_without_the_dtypes_peak_says_which_figure_stands_in():
    """A V100 has no bf16: its 125 TFLOP/s fp16 peak is the MFU's denominator, and the table says it is fp16's."""
    data = run_json("mfu", "--model", "gpt2", "--gpu", "v100", "--step-time", "1", "--batch", "8")
    row = next(r for r in data["rows"] if r["name"] == "peak_flops_per_s")
    assert row["value"] == 125e12 and row["note"] == "v100 dense fp16 (no bf16 peak: its fp16 stands in)"


def test_an_mfu_above_the_best_matmul_is_flagged():
    """Llama-3-8B at 8k on 64 H100s: 1.0M tokens/s is 91% of the bf16 peak, above the 80% an H100's best-shape matmul
    reaches (its measured MAMF): said, as the count is off; 0.5M tokens/s (46%) is not."""
    args = ("mfu", "--model", "llama-3-8b", "--gpu", "h100", "--gpus", "64", "--seq", "8k", "--tokens-per-s")
    assert any("above the 80% of the bf16 peak" in n for n in run_json(*args, "1.0M")["notes"])
    assert not any("best-shape matmul" in n for n in run_json(*args, "0.5M")["notes"])
