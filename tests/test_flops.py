"""FLOPs against the nanoGPT notebook, PaLM's formula and hand derivations."""

from __future__ import annotations

import dataclasses
import re

import pytest

from llmcalc.flops import FlopsSettings, attended_pairs, flops_breakdown, forward
from llmcalc.presets import load_gpu, load_model
from llmcalc.spec import SpecError

from .conftest import run_json, value

NANO = dict(L=12, h=768, heads=12, V=50257, T=1024)


def test_notebook_forward_rows():
    # Notebook flops() for GPT-2 124M at block_size 1024, per layer:
    # kqv 3,623,878,656; scores 1,610,612,736; reduce 1,610,612,736; proj 1,207,959,552;
    # ffw1 = ffw2 = 4,831,838,208; dense (lm_head) 79,047,426,048; forward 291,648,307,200.
    r = forward(load_model("nanogpt-124m"), 1024, 1024)
    assert r["attention/kqv"] == 12 * 3_623_878_656
    assert r["attention/scores"] == 12 * 1_610_612_736
    assert r["attention/reduce"] == 12 * 1_610_612_736
    assert r["attention/proj"] == 12 * 1_207_959_552
    assert r["mlp/up"] == r["mlp/down"] == 12 * 4_831_838_208
    assert r["dense/lm_head"] == 79_047_426_048
    assert r["forward"] == 291_648_307_200


def test_step_is_three_forwards_and_palm_ratio():
    b = flops_breakdown(load_model("nanogpt-124m"), FlopsSettings(seq=1024))
    assert b.value("total") == 874_944_921_600
    # PaLM: (6N + 12LHQT) * T with N = 124,337,664 - 786,432 -> 875,062,886,400 (ratio 1.0001)
    L, H, Q, T = 12, 12, 64, 1024
    assert b.value("model_flops") == (6 * (124_337_664 - 786_432) + 12 * L * H * Q * T) * T
    assert b.value("model_flops") / b.value("total") == pytest.approx(1.0001, abs=1e-4)


def test_factorized_embedding_forward_by_hand():
    # nanoGPT at p = 256, s = 1024: project_in and project_out cost 2 x 1024 x 256 x 768 each,
    # the head 2 x 1024 x 256 x 50257 (not x 768); the blocks are untouched.
    s, h, p, V = 1024, 768, 256, 50257
    base = load_model("nanogpt-124m")
    m = dataclasses.replace(base, embedding_proj_dim=p)
    r, ref = forward(m, s, s), forward(base, s, s)
    assert r["dense/project_in"] == r["dense/project_out"] == 2 * s * p * h
    assert r["dense/lm_head"] == 2 * s * p * V
    assert r["attention"] == ref["attention"] and r["mlp"] == ref["mlp"]
    assert r["forward"] == ref["attention"] + ref["mlp"] + 2 * s * p * (2 * h + V)
    assert "dense/project_in" not in ref
    # PaLM: N = 124,337,664 - 50257 x (768 - 256) + 2 x 256 x 768 - position table 1024 x 768
    n = 124_337_664 - V * (h - p) + 2 * p * h - 1024 * h
    assert flops_breakdown(m, FlopsSettings(seq=s)).value("model_flops") == (6 * n + 12 * 12 * 12 * 64 * s) * s


def test_causal_counts_the_triangle():
    # s = 4: full 16 pairs, causal 1 + 2 + 3 + 4 = 10; window 2 caps each row at 2: 1+2+2+2 = 7.
    assert attended_pairs(4, 4, "full") == 16
    assert attended_pairs(4, 4, "causal") == 10
    assert attended_pairs(4, 4, "causal", 2) == 7
    # one decode step at context 10 with a 4-token window sees 4 keys
    assert attended_pairs(1, 10, "causal", 4) == 4


def test_causal_halves_attention_core_only():
    m = load_model("nanogpt-124m")
    full, causal = forward(m, 1024, 1024, "full"), forward(m, 1024, 1024, "causal")
    assert causal["attention/scores"] == full["attention/scores"] * (1024 * 1025 // 2) / 1024**2
    assert causal["mlp"] == full["mlp"] and causal["attention/kqv"] == full["attention/kqv"]


def test_6nd_train_time_is_notebooks_3_46_days():
    # 6 * 124,337,664 * 300e9 / (8 * 312e12 * 0.3) = 298,889 s = 3.46 days
    a100 = load_gpu("a100-80gb")
    assert a100.peak("bf16") == 312e12
    b = flops_breakdown(load_model("nanogpt-124m"),
                        FlopsSettings(seq=1024, formula="6nd", tokens=300e9, gpus=8, efficiency=0.3), a100)
    assert b.summary["train_time"] == pytest.approx(6 * 124_337_664 * 300e9 / (8 * 312e12 * 0.3))
    assert b.summary["train_time"] / 86400 == pytest.approx(3.46, abs=0.005)


def test_full_recompute_adds_one_forward_of_the_layers():
    m = load_model("nanogpt-124m")
    none = flops_breakdown(m, FlopsSettings(seq=1024))
    full = flops_breakdown(m, FlopsSettings(seq=1024, recompute="full"))
    fwd = none.value("forward")
    lm_head = 2 * 1024 * 768 * 50257
    assert full.value("total") == 3 * fwd + (fwd - lm_head)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("seq", 0, "--seq must be at least 1, got 0"),
    ("grad_accum", 0, "--grad-accum must be at least 1, got 0"),
    ("gpus", 0, "--gpus must be at least 1, got 0"),
    ("efficiency", 1.5, "--efficiency must be in (0, 1], got 1.5"),
    ("formula", "8nd", "formula must be one of detailed, palm, 6nd, got '8nd'"),
    ("recompute", "some", "recompute must be one of none, selective, full, got 'some'"),
    ("attention", "sparse", "attention must be one of full, causal, got 'sparse'"),
])
def test_settings_are_checked_once(field, value, message):
    with pytest.raises(SpecError, match=f"^{re.escape(message)}$"):
        FlopsSettings(**{"seq": 1024, field: value})


def test_a_gpu_without_tokens_only_names_itself():
    m, h100 = load_model("nanogpt-124m"), load_gpu("h100-sxm")
    alone, timed = flops_breakdown(m, FlopsSettings(seq=1024)), flops_breakdown(m, FlopsSettings(seq=1024), h100)
    assert timed.gpu == "h100-sxm" and alone.gpu is None
    assert timed.summary == alone.summary and timed.rows == alone.rows


def test_moe_counts_active_experts():
    # Mixtral: per token per layer, 2 experts x 3 matrices x 4096 x 14336, x2 FLOPs.
    r = forward(load_model("mixtral-8x7b"), 1, 1)
    assert r["mlp/experts"] == 32 * 2 * 2 * 3 * 4096 * 14336
    assert r["mlp/router"] == 32 * 2 * 4096 * 8


def test_cli_seed_examples_2_and_8():
    data = run_json("flops", "--model", "nanogpt-124m", "--seq", "1024", "--batch", "1")
    assert value(data, "forward") == 291_648_307_200
    assert value(data, "total") == 874_944_921_600
    assert value(data, "model_flops") == 875_062_886_400
    # Article exercise 2: Llama-2-7B, 2N ~ 14 GFLOP per token to infer, 6N ~ 42 to train.
    data = run_json("flops", "--model", "llama-2-7b", "--formula", "6nd", "--seq", "1")
    assert value(data, "per_token/forward") == 2 * 6_738_415_616
    assert value(data, "per_token/total") == 6 * 6_738_415_616


def test_cli_train_time_example_4():
    data = run_json("flops", "--model", "nanogpt-124m", "--formula", "6nd", "--tokens", "300e9",
                    "--gpu", "a100-80gb", "--gpus", "8", "--efficiency", "0.3")
    assert value(data, "train_time") == pytest.approx(298_889, rel=0.001)


def test_palm_full_recomputation_re_runs_the_layers_not_the_lm_head():
    """PaLM's forward, (6N + 12LHQT) / 3 a token, counts the LM head (N holds its 32,000 x 4,096 weights); full
    recomputation re-runs the layers only: the forward less 2 x 131,072,000 FLOPs a token, as the detailed count's
    layers are. The total says it holds recomputation."""
    m = load_model("llama-2-7b")
    palm = flops_breakdown(m, FlopsSettings(seq=4096, recompute="full", formula="palm"))
    tokens = 4096
    assert palm.value("recompute") == palm.value("forward") - tokens * 2 * 32_000 * 4096
    detailed = flops_breakdown(m, FlopsSettings(seq=4096, recompute="full"))
    assert palm.value("recompute") == pytest.approx(detailed.value("recompute"), rel=0.01)
    assert next(r.note for r in palm.rows if r.name == "total") == "PaLM 6N + 12LHQT, with full recomputation"


def test_palm_recomputation_leaves_out_a_tied_head_with_a_bias_too():
    """A tied head is the embedding's matrix; with lm_head_bias its own row holds only the 50,257 biases. Full
    recomputation leaves out the whole head: 2 x (50,257 x 768 + 50,257) FLOPs a token."""
    m = dataclasses.replace(load_model("gpt2"), lm_head_bias=True)
    b = flops_breakdown(m, FlopsSettings(seq=1024, recompute="full", formula="palm"))
    assert b.value("forward") - b.value("recompute") == 1024 * 2 * (50_257 * 768 + 50_257)
