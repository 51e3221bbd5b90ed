"""Parameter counts against published totals and hand derivations (never against the code itself)."""

from __future__ import annotations

import dataclasses

import pytest

from llmcalc.params import count, matmul_params, params_breakdown
from llmcalc.presets import load_model
from llmcalc.spec import SpecError

from .conftest import run, run_json, value

# Exact totals from the models' published checkpoints (Hugging Face model cards / safetensors
# metadata; see presets' source fields). DeepSeek-V3 and Mixtral-8x22B are checked separately.
PUBLISHED = {
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
    "nanogpt-124m": 124_337_664,
    "llama-2-7b": 6_738_415_616,
    "llama-2-13b": 13_015_864_320,
    "llama-2-70b": 68_976_648_192,
    "llama-3-8b": 8_030_261_248,
    "llama-3-70b": 70_553_706_496,
    "llama-3.1-8b": 8_030_261_248,
    "llama-3.1-70b": 70_553_706_496,
    "llama-3.2-1b": 1_235_814_400,
    "llama-3.2-3b": 3_212_749_824,
    "mistral-7b": 7_241_732_096,
    "mixtral-8x7b": 46_702_792_704,
    "phi-3-mini": 3_821_079_552,
    "falcon-7b": 6_921_720_704,
    "gemma-7b": 8_537_680_896,
    "phi-1.5": 1_418_270_720,
    "phi-2": 2_779_683_840,
    "tinyllama-1.1b": 1_100_048_384,
    "stablelm-base-alpha-3b": 3_637_321_728,
    "bloomz-7b1": 7_069_016_064,
}


@pytest.mark.parametrize("name,total", sorted(PUBLISHED.items()))
def test_published_totals(name, total):
    assert count(load_model(name))["total"] == total


# Stated sizes from model cards, rounded as the cards round them.
STATED = {"llama-3.1-405b": 405.9e9, "qwen2.5-7b": 7.61e9, "qwen2.5-72b": 72.7e9,
          "qwen3-8b": 8.2e9, "gemma-2-9b": 9.24e9, "mixtral-8x22b": 140.6e9, "deepseek-v3": 671e9,
          "qwen3-30b-a3b": 30.5e9, "qwen3-235b-a22b": 235e9}


@pytest.mark.parametrize("name,stated", sorted(STATED.items()))
def test_stated_sizes(name, stated):
    assert count(load_model(name))["total"] == pytest.approx(stated, rel=0.005)


def test_nanogpt_components_match_notebook():
    # nanoGPT notebook, params(): embedding = position 786,432 + token 38,597,376;
    # per block: kqv 1,769,472 + proj 589,824, ffw 2,359,296 x 2, two LN weights of 768.
    r = count(load_model("nanogpt-124m"))
    assert r["embedding"] == 786_432 + 38_597_376
    assert r["attention"] == 12 * (1_769_472 + 589_824)
    assert r["mlp"] == 12 * 2 * 2_359_296
    assert r["norm"] == 12 * 2 * 768 + 768
    assert r["lm_head"] == 0


def test_llama2_7b_article_count_ignores_norms():
    # The systems article: L(4h² + 3hF) + 2Vh = 6,738,149,376, norms left out.
    L, h, F, V = 32, 4096, 11008, 32000
    r = count(load_model("llama-2-7b"))
    assert r["total"] - r["norm"] == L * (4 * h * h + 3 * h * F) + 2 * V * h == 6_738_149_376
    assert r["norm"] == (2 * L + 1) * h


def test_gqa_and_bias_shapes_by_hand():
    # Qwen2.5-7B: q 3584x3584 + bias, k and v 3584x512 + bias (4 kv heads of 128), o without bias.
    m = load_model("qwen2.5-7b")
    h, kv = 3584, 4 * 128
    assert count(m)["attention/qkv"] == 28 * (h * h + h + 2 * (h * kv + kv))
    assert count(m)["attention/proj"] == 28 * h * h


def test_mixtral_active_parameters():
    # 2 of 8 experts per token: 6 idle experts of 3 x 4096 x 14336 in each of 32 layers.
    idle = 32 * 6 * 3 * 4096 * 14336
    r = count(load_model("mixtral-8x7b"))
    assert r["active"] == 46_702_792_704 - idle == 12_879_925_248  # model card: 12.9B active


@pytest.mark.parametrize("name, layers, hidden, width, stated", [("qwen3-30b-a3b", 48, 2048, 768, 3.3e9),
                                                                  ("qwen3-235b-a22b", 94, 4096, 1536, 22e9)])
def test_qwen3_moe_active_parameters(name, layers, hidden, width, stated):
    # 8 of 128 SwiGLU experts per token: 120 idle experts of 3 x hidden x width in every layer (model cards:
    # "3.3B activated", "22B activated").
    r = count(load_model(name))
    assert r["total"] - r["active"] == layers * 120 * 3 * hidden * width
    assert r["active"] == pytest.approx(stated, rel=0.02)


def test_deepseek_v3_active_parameters():
    # DeepSeek-V3 report: 671B total, 37B activated per token (MTP module excluded).
    r = count(load_model("deepseek-v3"))
    assert r["total"] == pytest.approx(671e9, rel=0.002)
    assert r["active"] == pytest.approx(37e9, rel=0.02)


def test_palm_n_drops_position_table_and_untied_embedding():
    # Notebook: N = total - position table (tied embedding kept); untied input embedding dropped.
    assert matmul_params(load_model("nanogpt-124m")) == 124_337_664 - 1024 * 768
    assert matmul_params(load_model("llama-3-70b")) == 70_553_706_496 - 128256 * 8192


def test_factorized_embedding_by_hand():
    # nanoGPT with tokens embedded at p = 256: embedding 50257 x 256, project_in 256 x 768 and
    # project_out 768 x 256 (no bias), positions still 1024 x 768; the head reads 256 wide.
    V, h, p, pos = 50257, 768, 256, 1024 * 768
    base = load_model("nanogpt-124m")
    tied = dataclasses.replace(base, embedding_proj_dim=p)
    r = count(tied)
    assert r["embedding/token"] == V * p
    assert r["embedding/project_in"] == r["embedding/project_out"] == p * h
    assert r["embedding"] == V * p + pos + 2 * p * h and r["lm_head"] == 0
    layers = count(base)["total"] - count(base)["embedding"]  # blocks, norms, tied head: unchanged
    assert r["total"] == layers + V * p + pos + 2 * p * h == 124_337_664 - V * (h - p) + 2 * p * h
    # PaLM's N: the tied table is the head (kept), the projections are matmuls (kept), positions go
    assert matmul_params(tied) == r["total"] - pos
    untied = count(dataclasses.replace(tied, tie_word_embeddings=False))
    assert untied["lm_head"] == p * V and untied["total"] == r["total"] + p * V
    assert matmul_params(dataclasses.replace(tied, tie_word_embeddings=False)) == untied["total"] - pos - V * p
    # equal to hidden_size: no projection at all (transformers' OPT builds none)
    assert count(dataclasses.replace(base, embedding_proj_dim=h))["total"] == 124_337_664
    with pytest.raises(SpecError, match="embedding_proj_dim"):
        dataclasses.replace(base, embedding_proj_dim=0)


def test_qk_norm_bias_by_hand():
    # GPT-2 (LayerNorm with bias) given per-head q/k norms over 12 q + 12 k heads of 64:
    # with the hidden norms' bias 2 x 12 x 24 x 64 per model, bias-free half that.
    base = dataclasses.replace(load_model("gpt2"), qk_norm="full")
    assert count(base)["norm/qk"] == 12 * 2 * (12 + 12) * 64
    no_bias = dataclasses.replace(base, qk_norm_bias=False)
    assert count(no_bias)["norm/qk"] == 12 * (12 + 12) * 64
    assert count(no_bias)["norm/layers"] == count(base)["norm/layers"] == 12 * 2 * 2 * 768
    assert count(dataclasses.replace(base, qk_norm_bias=True))["norm/qk"] == count(base)["norm/qk"]
    with pytest.raises(SpecError, match="qk_norm_bias is set but qk_norm is none"):
        dataclasses.replace(load_model("gpt2"), qk_norm_bias=False)
    with pytest.raises(SpecError, match="RMSNorm has no bias"):
        dataclasses.replace(load_model("llama-3-8b"), qk_norm="head", qk_norm_bias=True)


def test_checkpoint_bytes_fp32_adamw():
    # Notebook: fp32 weights + 2 AdamW buffers = 12 bytes/param -> 1.49 GB.
    b = params_breakdown(load_model("nanogpt-124m"), "fp32", "adamw")
    assert b.summary["checkpoint_bytes"] == 124_337_664 * 12 == 1_492_051_968


def test_a_mixed_precision_checkpoint_holds_bf16_weights_an_fp32_master_and_fp32_states():
    """Megatron-LM and DeepSpeed save bf16 weights beside the fp32 optimizer: master, m and v, 2 + 4 + 4 + 4 = 14
    B/param, as `memory`'s default mixed precision trains (the ZeRO paper's 16 B/param less the gradients). Pure bf16
    training keeps its states in bf16: 6 B/param."""
    m = load_model("llama-2-7b")
    assert params_breakdown(m, "bf16").summary["checkpoint_bytes"] == 6_738_415_616 * 14
    assert params_breakdown(m, "bf16", precision="bf16").summary["checkpoint_bytes"] == 6_738_415_616 * 6
    assert params_breakdown(m, "bf16", "adamw-8bit").summary["checkpoint_bytes"] == 6_738_415_616 * (2 + 4 + 2)
    with pytest.raises(SpecError, match="--precision fp32 saves fp32 weights"):
        params_breakdown(m, "bf16", precision="fp32")


def test_int4_weights_keep_half_bytes():
    # GPT-2 in int4 (GPTQ/AWQ layout): the 12 blocks' linears, 12 x 12h² = 84,934,656 weights, at half
    # a byte plus one fp16 scale per 128; embeddings, norms, biases stay 16-bit. Half a byte survives
    # (no integer division), and params says what memory --mode infer says.
    linears = 12 * 12 * 768**2
    b = params_breakdown(load_model("gpt2"), "int4", "sgd")
    assert b.summary["weight_bytes"] == linears / 2 + linears / 128 * 2 + (124_439_808 - linears) * 2


def test_cli_rows_follow_contract():
    data = run_json("params", "--model", "nanogpt-124m")
    names = {row["name"] for row in data["rows"]}
    assert {"embedding", "attention", "mlp", "norm", "lm_head", "total", "active"} <= names
    assert {"weight_bytes", "checkpoint_bytes"} <= set(data["summary"])
    assert value(data, "total") == 124_337_664
    assert all(isinstance(row["value"], (int, float)) for row in data["rows"])


def test_a_precision_that_contradicts_the_weights_says_what_to_give():
    """--precision mixed saves 16-bit weights: with --dtype fp32 the message names the two ways out, not LoRA."""
    out = run("params", "--model", "llama-3.1-8b", "--dtype", "fp32", "--precision", "mixed")
    assert out.exit_code == 2 and "give --dtype bf16, or --precision fp32" in out.stderr
