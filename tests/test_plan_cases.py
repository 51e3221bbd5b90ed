"""tests/plan_cases.py turns the published training layouts into Cases for `llmcalc plan`: every entry
is a Case or excluded with its reason, every Case multiplies out to its GPUs, every model has the size
its source gives, and every MFU agrees with its throughput."""

from __future__ import annotations

import functools

import pytest

from llmcalc.flops import RECOMPUTE, palm_per_token
from llmcalc.params import count
from llmcalc.presets import load_gpu

from .plan_cases import EXCLUDED, PARAMS_EXCEPTIONS, PARAMS_TOLERANCE, Case, cases, entries

ENTRIES = {e["id"]: e for e in entries()}  # the YAML alone: presets are read inside the tests
USED = [i for i in ENTRIES if i not in EXCLUDED]

# Cases per group; a change to the data or to the conventions shows up here first.
PER_GROUP = {"llama3-paper": 3, "megatron-lm-2021": 16, "korthikanti-2022": 10, "megatron-core-readme": 9,
             "mosaicml-llm-foundry": 216, "nemo-24.07": 5, "nemo-long-sequence": 9, "megatron-bridge-25.11": 24,
             "pytorch-fsdp-blog": 6, "bloom": 1, "mt-nlg": 3, "deepseek": 1, "megatron-core-moe": 2}
# How far PaLM's model FLOPs (6N + 12LHQT) x tokens/s may sit from the MFU (the IBM blog's figures are rounded,
# 6%), and from a source's own TFLOP/s beyond the band its attention count allows (Megatron-Bridge's MFU is read
# from its tokens/s; its TFLOP/s count attention causal, up to 21% fewer FLOPs for Qwen3-30B-A3B at 4k).
MFU_VS_TOKENS = 0.15
MFU_FROM = ("published", "derived from HFU", "derived from step time", "PaLM's FLOPs x tokens/s / BF16 peak",
            "model TFLOP/s / BF16 peak", "none: ")
ASSUMABLE = {"gpus_per_node", "zero", "sp", "recompute", "dtype"}


@functools.lru_cache(maxsize=1)
def by_id() -> dict[str, Case]:
    return {c.id: c for c in cases()}


def test_every_entry_is_a_case_or_excluded_with_a_reason():
    assert len(ENTRIES) == len(entries()) == 371
    assert set(EXCLUDED) <= set(ENTRIES), set(EXCLUDED) - set(ENTRIES)
    assert sorted(by_id()) == sorted(USED)
    assert all(reason.strip() and "\n" not in reason for reason in EXCLUDED.values())


def test_cases_per_group():
    found = {}
    for c in cases():
        found[c.group] = found.get(c.group, 0) + 1
    assert found == PER_GROUP
    assert [c.id for c in cases(("bloom", "mt-nlg"))] == [i for i in USED if ENTRIES[i]["group"] in ("bloom", "mt-nlg")]


@pytest.mark.parametrize("case_id", USED)
def test_a_case_multiplies_out(case_id):
    c = by_id()[case_id]
    assert c.tp * c.pp * c.cp * c.dp == c.gpus
    if c.micro_batch is not None:
        assert c.global_batch % (c.dp * c.micro_batch) == 0
    assert (c.dp * c.cp * c.tp) % c.ep == 0  # experts are spread over the data-parallel ranks (and CP, TP)
    assert c.gpus_per_node <= c.gpus or c.gpus_per_node == 8


@pytest.mark.parametrize("case_id", USED)
def test_a_case_speaks_llmcalcs_vocabulary(case_id):
    c = by_id()[case_id]
    assert load_gpu(c.gpu).name == c.gpu  # a preset's own name, not an alias
    assert c.dtype in ("bf16", "fp8") and c.recompute in RECOMPUTE and c.zero in (0, 1, 2, 3)
    assert isinstance(c.sp, bool) and not (c.sp and c.tp == 1)
    assert c.mfu_from.startswith(MFU_FROM) and (c.mfu is None) == c.mfu_from.startswith("none: ")
    assert c.mfu is None or 0 < c.mfu < (2 if c.dtype == "fp8" else 1)  # FP8 runs over the BF16 peak can pass 1
    assert ("FP8 run" in c.mfu_from) == (c.dtype == "fp8" and c.mfu is not None)
    assert set(c.assumed) <= ASSUMABLE and c.source.startswith("https://")


@pytest.mark.parametrize("case_id", USED)
def test_a_cases_model_has_its_published_size(case_id):
    c, published = by_id()[case_id], ENTRIES[case_id]["model"]
    tolerance = PARAMS_EXCEPTIONS.get(published["name"], (PARAMS_TOLERANCE, ""))[0]
    counted = count(c.model)["total"]
    assert counted == pytest.approx(published["params"], rel=tolerance)
    if c.group == "mosaicml-llm-foundry":  # the NumParams column, position table included
        assert counted == published["params"]


def test_every_params_exception_is_needed():
    names = {ENTRIES[i]["model"]["name"]: i for i in USED}
    for name in PARAMS_EXCEPTIONS:
        c = by_id()[names[name]]
        off = abs(count(c.model)["total"] / ENTRIES[c.id]["model"]["params"] - 1)
        assert PARAMS_TOLERANCE < off <= PARAMS_EXCEPTIONS[name][0], name


SHAPE = {"layers": "num_hidden_layers", "hidden": "hidden_size", "heads": "num_attention_heads",
         "kv_heads": "num_key_value_heads", "vocab": "vocab_size"}


@pytest.mark.parametrize("case_id", USED)
def test_a_cases_model_has_the_shape_its_entry_gives(case_id):
    c, published = by_id()[case_id], ENTRIES[case_id]["model"]
    for key, field in SHAPE.items():
        if published[key] is not None:
            assert getattr(c.model, field) == published[key], key
    if published["ffn"] is not None:
        assert c.model.intermediate_size == published["ffn"]


def test_every_mfu_agrees_with_its_throughput():
    """PaLM's model FLOPs per token x tokens/s per GPU / the BF16 peak is the MFU again: a per-GPU
    throughput read as a total (or the reverse), or an HFU taken for an MFU, would stand out."""
    compared, offenders = 0, []
    for c in cases():
        if c.mfu is None or c.tokens_per_gpu_s is None:
            continue
        compared += 1
        peak = load_gpu(c.gpu).peak("bf16")
        again = palm_per_token(c.model, c.seq) * c.tokens_per_gpu_s / peak
        if c.mfu_from.startswith("PaLM"):  # read from the tokens/s: the source's own TFLOP/s are checked instead,
            m = c.model  # between PaLM's count and Megatron-Bridge's, which counts half of the 12LHQT (causal)
            half = 3 * m.num_hidden_layers * m.num_attention_heads * (m.qk_head_dim + m.v_dim) * c.seq
            low, mfu = (palm_per_token(m, c.seq) - half) * c.tokens_per_gpu_s / peak, c.mfu
            published = ENTRIES[c.id]["measured"]["tflops_per_gpu"] * 1e12 / peak
            if not low * (1 - MFU_VS_TOKENS) <= published <= mfu * (1 + MFU_VS_TOKENS):
                offenders.append(f"{c.id}: TFLOP/s {published:.3f} of peak, from tokens/s {low:.3f}-{mfu:.3f}")
        elif abs(again / c.mfu - 1) > MFU_VS_TOKENS:
            offenders.append(f"{c.id}: MFU {c.mfu:.3f}, from tokens/s {again:.3f}")
    assert compared >= 250 and not offenders, offenders


def test_megatron_mfu_from_hfu_matches_palms_figure_for_mt_nlg():
    # PaLM Table 3: MT-NLG at 65.43K tokens/s on 2240 A100s is 30.2% MFU.
    assert by_id()["mtnlg-530b-2240xa100"].mfu == pytest.approx(0.302, abs=0.002)
