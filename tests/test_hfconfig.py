"""hfconfig: Hugging Face config.json -> ModelSpec, file/dir/hub-cache resolution, preset export.

tests/data/hf/ holds published config.json files. TRANSFORMERS pins, for each, the parameter
count of the real model code: ``sum(p.numel() for p in model.parameters())`` for
``AutoModelForCausalLM.from_config(cfg)`` built on the meta device with transformers 5.23.0 and
torch 2.13.0, split into components by module name (tests/fidelity/test_fidelity_hf.py recomputes
every number here). Tied weights are one Parameter and counted once, like llmcalc's tied head.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import yaml

from llmcalc import hfconfig, params, presets
from llmcalc.hfconfig import HFConfigWarning
from llmcalc.spec import ModelSpec, SpecError

DATA = Path(__file__).parent / "data" / "hf"

# stem: (total, {component: params}) from transformers 5.23.0 (see module docstring).
TRANSFORMERS = {
    "bloom-560m": (559_214_592, {"embedding": 256_901_120, "attention": 100_761_600, "mlp": 201_449_472, "norm": 102_400, "lm_head": 0}),
    "c4ai-command-r-plus": (103_810_674_688, {"embedding": 3_145_728_000, "attention": 20_937_965_568, "mlp": 79_725_330_432, "norm": 1_650_688, "lm_head": 0}),
    "c4ai-command-r-v01": (34_980_831_232, {"embedding": 2_097_152_000, "attention": 10_737_418_240, "mlp": 22_145_925_120, "norm": 335_872, "lm_head": 0}),
    "c4ai-command-r7b-12-2024": (8_028_033_024, {"embedding": 1_048_576_000, "attention": 1_342_177_280, "mlp": 5_637_144_576, "norm": 135_168, "lm_head": 0}),
    "deepseek-v2-lite": (15_706_484_224, {"embedding": 209_715_200, "attention": 371_589_120, "mlp": 14_915_338_240, "norm": 126_464, "lm_head": 209_715_200}),
    "deepseek-v3": (671_026_404_352, {"embedding": 926_679_040, "attention": 11_413_422_080, "mlp": 657_758_617_600, "norm": 1_006_592, "lm_head": 926_679_040}),
    "ernie-4.5-0.3b": (360_748_032, {"embedding": 105_906_176, "attention": 84_934_656, "mlp": 169_869_312, "norm": 37_888, "lm_head": 0}),
    "falcon-40b": (41_303_293_952, {"embedding": 532_676_608, "attention": 8_556_380_160, "mlp": 32_212_254_720, "norm": 1_982_464, "lm_head": 0}),
    "falcon-7b": (6_921_720_704, {"embedding": 295_469_056, "attention": 1_340_080_128, "mlp": 5_285_871_616, "norm": 299_904, "lm_head": 0}),
    "falcon-rw-1b": (1_311_625_216, {"embedding": 103_022_592, "attention": 402_849_792, "mlp": 805_552_128, "norm": 200_704, "lm_head": 0}),
    "gemma-2-2b": (2_614_341_888, {"embedding": 589_824_000, "attention": 368_050_176, "mlp": 1_656_225_792, "norm": 241_920, "lm_head": 0}),
    "gemma-2b": (2_506_172_416, {"embedding": 524_288_000, "attention": 169_869_312, "mlp": 1_811_939_328, "norm": 75_776, "lm_head": 0}),
    "gemma-3-1b": (999_885_952, {"embedding": 301_989_888, "attention": 76_677_120, "mlp": 621_084_672, "norm": 134_272, "lm_head": 0}),
    "gpt-j-6b": (6_050_882_784, {"embedding": 206_438_400, "attention": 1_879_048_192, "mlp": 3_758_669_824, "norm": 237_568, "lm_head": 206_488_800}),
    "gpt2": (124_439_808, {"embedding": 39_383_808, "attention": 28_348_416, "mlp": 56_669_184, "norm": 38_400, "lm_head": 0}),
    "granite-3.0-1b-a400m-base": (1_334_628_352, {"embedding": 50_334_720, "attention": 75_497_472, "mlp": 1_208_745_984, "norm": 50_176, "lm_head": 0}),
    "granite-3.0-2b-base": (2_533_531_648, {"embedding": 100_669_440, "attention": 419_430_400, "mlp": 2_013_265_920, "norm": 165_888, "lm_head": 0}),
    "llama-3.2-1b": (1_235_814_400, {"embedding": 262_668_288, "attention": 167_772_160, "mlp": 805_306_368, "norm": 67_584, "lm_head": 0}),
    "mistral-7b-v0.1": (7_241_732_096, {"embedding": 131_072_000, "attention": 1_342_177_280, "mlp": 5_637_144_576, "norm": 266_240, "lm_head": 131_072_000}),
    "mixtral-8x7b-v0.1": (46_702_792_704, {"embedding": 131_072_000, "attention": 1_342_177_280, "mlp": 45_098_205_184, "norm": 266_240, "lm_head": 131_072_000}),
    "mpt-7b": (6_649_286_656, {"embedding": 206_569_472, "attention": 2_147_483_648, "mlp": 4_294_967_296, "norm": 266_240, "lm_head": 0}),
    "olmo-1b-hf": (1_176_764_416, {"embedding": 103_022_592, "attention": 268_435_456, "mlp": 805_306_368, "norm": 0, "lm_head": 0}),
    "olmo-2-1124-7b": (7_298_617_344, {"embedding": 411_041_792, "attention": 2_147_483_648, "mlp": 4_328_521_728, "norm": 528_384, "lm_head": 411_041_792}),
    "olmoe-1b-7b-0924": (6_919_161_856, {"embedding": 103_022_592, "attention": 268_435_456, "mlp": 6_444_548_096, "norm": 133_120, "lm_head": 103_022_592}),
    "opt-125m": (125_239_296, {"embedding": 40_183_296, "attention": 28_348_416, "mlp": 56_669_184, "norm": 38_400, "lm_head": 0}),
    "opt-350m": (331_196_416, {"embedding": 28_887_040, "attention": 100_761_600, "mlp": 201_449_472, "norm": 98_304, "lm_head": 0}),
    "phi-2": (2_779_683_840, {"embedding": 131_072_000, "attention": 839_188_480, "mlp": 1_678_131_200, "norm": 168_960, "lm_head": 131_123_200}),
    "phi-3-mini-4k": (3_821_079_552, {"embedding": 98_500_608, "attention": 1_207_959_552, "mlp": 2_415_919_104, "norm": 199_680, "lm_head": 98_500_608}),
    "pythia-160m": (162_322_944, {"embedding": 38_633_472, "attention": 28_348_416, "mlp": 56_669_184, "norm": 38_400, "lm_head": 38_633_472}),
    "qwen1.5-moe-a2.7b": (14_315_784_192, {"embedding": 311_164_928, "attention": 402_800_640, "mlp": 13_290_553_344, "norm": 100_352, "lm_head": 311_164_928}),
    "qwen2.5-0.5b": (494_032_768, {"embedding": 136_134_656, "attention": 44_067_840, "mlp": 313_786_368, "norm": 43_904, "lm_head": 0}),
    "qwen3-0.6b": (596_049_920, {"embedding": 155_582_464, "attention": 176_160_768, "mlp": 264_241_152, "norm": 65_536, "lm_head": 0}),
    "qwen3-30b-a3b": (30_532_122_624, {"embedding": 311_164_928, "attention": 905_969_664, "mlp": 29_003_612_160, "norm": 210_944, "lm_head": 311_164_928}),
    "santacoder": (1_124_886_528, {"embedding": 105_119_744, "attention": 214_013_952, "mlp": 805_552_128, "norm": 200_704, "lm_head": 0}),
    "smollm3-3b": (3_075_098_624, {"embedding": 262_668_288, "attention": 377_487_360, "mlp": 2_434_793_472, "norm": 149_504, "lm_head": 0}),
    "stablelm-2-1.6b": (1_644_515_328, {"embedding": 205_520_896, "attention": 402_800_640, "mlp": 830_472_192, "norm": 200_704, "lm_head": 205_520_896}),
    "stablelm-2-12b": (12_143_185_920, {"embedding": 513_802_240, "attention": 2_621_440_000, "mlp": 8_493_465_600, "norm": 675_840, "lm_head": 513_802_240}),
    "starcoder2-3b": (3_030_371_328, {"embedding": 150_994_944, "attention": 613_616_640, "mlp": 2_265_384_960, "norm": 374_784, "lm_head": 0}),
}
# Not in transformers (remote code only): counted by hand from modeling_internlm2.py
# (wqkv, wo, w1/w3/w2, attention_norm, ffn_norm, untied output); 7.74B as published.
REMOTE_CODE = {"internlm2.5-7b": 7_737_708_544}
# Active ("activated") parameters per token as the model cards state them, in billions.
ACTIVE = {"mixtral-8x7b-v0.1": 12.9, "qwen1.5-moe-a2.7b": 2.7, "qwen3-30b-a3b": 3.3, "olmoe-1b-7b-0924": 1.3,
          "deepseek-v3": 37}


def config(stem: str) -> dict:
    return json.loads((DATA / f"{stem}.json").read_text())


def spec_of(stem: str, **changes) -> ModelSpec:
    """Map a shipped config (optionally edited); fails on any HFConfigWarning (every mapping is exact)."""
    cfg = {**config(stem), **changes}
    for key in [k for k, v in changes.items() if v is ...]:
        del cfg[key]
    with warnings.catch_warnings():
        warnings.simplefilter("error", HFConfigWarning)
        return hfconfig.from_config(cfg, stem, source=f"tests/data/hf/{stem}.json")


# -- exact counts --------------------------------------------------------------------------------

def test_every_shipped_config_is_pinned():
    assert {p.stem for p in DATA.glob("*.json")} == set(TRANSFORMERS) | set(REMOTE_CODE)


def test_every_mapping_is_exercised_by_a_shipped_config():
    assert {config(p.stem)["model_type"] for p in DATA.glob("*.json")} == set(hfconfig.MAPPERS)


@pytest.mark.parametrize("stem", sorted(TRANSFORMERS))
def test_total_and_components_match_transformers(stem):
    rows = params.count(spec_of(stem))
    total, parts = TRANSFORMERS[stem]
    assert rows["total"] == total
    assert {k: rows[k] for k in parts} == parts


def test_remote_code_model_counted_by_hand():
    assert params.count(spec_of("internlm2.5-7b"))["total"] == REMOTE_CODE["internlm2.5-7b"]


@pytest.mark.parametrize("stem", sorted(ACTIVE))
def test_moe_active_parameters_match_published(stem):
    assert params.count(spec_of(stem))["active"] / 1e9 == pytest.approx(ACTIVE[stem], rel=0.02)  # cards round


def test_opt_350m_factorized_embedding():
    # word_embed_proj_dim 512 != hidden_size 1024: embed_tokens 50272 x 512, project_in 512 x 1024,
    # project_out 1024 x 512 (no bias), tied head 512 x 50272; positions stay 1024 wide.
    medium, small = spec_of("opt-350m"), spec_of("opt-125m")
    assert medium.embedding_proj_dim == 512 and small.embedding_proj_dim is None
    r = params.count(medium)
    assert r["embedding/token"] == 50272 * 512
    assert r["embedding/project_in"] == r["embedding/project_out"] == 512 * 1024
    assert r["embedding/position"] == 2050 * 1024 and r["lm_head"] == 0
    assert "embedding/project_in" not in params.count(small)


def test_stablelm_qk_layernorms_have_no_bias():
    # qk_layernorm: LayerNorm(head_dim, bias=False) for each of 32 q and 8 kv heads, while the
    # hidden LayerNorms keep their bias.
    s = spec_of("stablelm-2-12b")
    assert (s.qk_norm, s.qk_norm_bias, s.norm_bias) == ("full", False, True)
    assert params.count(s)["norm/qk"] == 40 * (32 + 8) * 160
    assert spec_of("stablelm-2-1.6b").qk_norm_bias is None  # no q/k norms at all


# -- quirks, one per line of the issue -----------------------------------------------------------

@pytest.mark.parametrize("stem, tied", [
    ("gpt2", True), ("opt-125m", True), ("bloom-560m", True), ("falcon-7b", True), ("gemma-2b", True),
    ("starcoder2-3b", True), ("c4ai-command-r-v01", True), ("mpt-7b", True), ("santacoder", True),
    ("ernie-4.5-0.3b", True), ("smollm3-3b", True), ("pythia-160m", False), ("gpt-j-6b", False),
    ("llama-3.2-1b", False), ("mistral-7b-v0.1", False), ("qwen2.5-0.5b", False), ("phi-2", False),
    ("phi-3-mini-4k", False), ("olmo-1b-hf", False), ("deepseek-v3", False), ("granite-3.0-2b-base", False),
    ("stablelm-2-1.6b", False),
])
def test_tie_word_embeddings_defaults_per_model_type_when_absent(stem, tied):
    assert spec_of(stem, tie_word_embeddings=...).tie_word_embeddings is tied


def test_stated_tie_overrides_the_default():
    assert spec_of("llama-3.2-1b").tie_word_embeddings is True
    assert spec_of("qwen2.5-0.5b").tie_word_embeddings is True
    assert spec_of("gpt2", tie_word_embeddings=False).tie_word_embeddings is False


def test_head_dim_kept_only_when_it_differs_from_hidden_over_heads():
    assert spec_of("gemma-2-2b").head_dim == 256  # 2304 / 8 = 288
    assert spec_of("qwen3-0.6b").head_dim == 128  # 1024 / 16 = 64
    assert spec_of("gemma-2b").head_dim is None  # 2048 / 8 = 256 already
    assert spec_of("llama-3.2-1b").head_dim is None  # head_dim 64 = 2048 / 32


@pytest.mark.parametrize("stem, qk", [("qwen3-0.6b", "head"), ("gemma-3-1b", "head"), ("olmo-2-1124-7b", "full"),
                                      ("olmoe-1b-7b-0924", "full"), ("c4ai-command-r-plus", "full"),
                                      ("c4ai-command-r-v01", "none"), ("llama-3.2-1b", "none")])
def test_qk_norms(stem, qk):
    assert spec_of(stem).qk_norm == qk


@pytest.mark.parametrize("stem, norms, parallel", [
    ("gemma-2-2b", 4, False), ("gemma-3-1b", 4, False), ("falcon-7b", 1, True), ("falcon-40b", 2, True),
    ("falcon-rw-1b", 2, False), ("gpt-j-6b", 1, True), ("phi-2", 1, True), ("c4ai-command-r-v01", 1, True),
    ("pythia-160m", 2, True), ("stablelm-2-12b", 1, True), ("stablelm-2-1.6b", 2, False), ("llama-3.2-1b", 2, False),
])
def test_norms_per_layer_and_parallel_blocks(stem, norms, parallel):
    spec = spec_of(stem)
    assert (spec.norms_per_layer, spec.parallel_attn) == (norms, parallel)


def test_gpt_neox_parallel_residual_follows_the_config():
    assert spec_of("pythia-160m", use_parallel_residual=False).parallel_attn is False
    assert spec_of("pythia-160m", use_parallel_residual=...).parallel_attn is True  # GPTNeoXConfig default


def test_qwen2_biases_only_on_qkv():
    s = spec_of("qwen2.5-0.5b")
    assert (s.attention_bias, s.attention_out_bias, s.mlp_bias) == (True, False, False)


def test_absent_num_key_value_heads_means_multi_head_attention():
    assert spec_of("llama-3.2-1b", num_key_value_heads=...).num_key_value_heads == 32
    assert spec_of("pythia-160m").num_key_value_heads == 12


def test_qwen2_moe_shared_expert_and_its_gate():
    s = spec_of("qwen1.5-moe-a2.7b")
    assert (s.num_experts, s.num_experts_per_tok, s.moe_intermediate_size) == (60, 4, 1408)
    assert (s.num_shared_experts, s.shared_expert_intermediate_size, s.shared_expert_gate) == (1, 5632, True)
    assert params.count(s)["mlp/shared_experts"] == 24 * (3 * 2048 * 5632 + 2048)


@pytest.mark.parametrize("changes, dense", [
    ({}, 0), ({"mlp_only_layers": [0, 5]}, 2), ({"decoder_sparse_step": 2}, 12),
    ({"decoder_sparse_step": 2, "mlp_only_layers": [1, 2]}, 13),
])
def test_qwen_moe_dense_layers_from_mlp_only_layers_and_sparse_step(changes, dense):
    assert spec_of("qwen1.5-moe-a2.7b", **changes).num_dense_layers == dense


def test_qwen3_moe_dense_layers():
    assert spec_of("qwen3-30b-a3b").num_dense_layers == 0
    assert spec_of("qwen3-30b-a3b", mlp_only_layers=[0, 47]).num_dense_layers == 2


def test_deepseek_leading_dense_layers_and_mla():
    lite, v3 = spec_of("deepseek-v2-lite"), spec_of("deepseek-v3")
    assert (lite.num_dense_layers, v3.num_dense_layers) == (1, 3)  # first_k_dense_replace
    assert (lite.num_shared_experts, v3.num_shared_experts) == (2, 1)
    assert lite.q_lora_rank is None and v3.q_lora_rank == 1536  # V2-Lite projects q directly
    assert (v3.kv_lora_rank, v3.qk_nope_head_dim, v3.qk_rope_head_dim, v3.v_head_dim) == (512, 128, 64, 128)
    assert spec_of("deepseek-v3", moe_layer_freq=2).num_dense_layers == 3 + 29  # odd layers stay dense


def test_deepseek_v3_score_correction_bias_is_a_buffer_not_a_parameter():
    # transformers registers e_score_correction_bias with nn.Buffer, so model.parameters() leaves it
    # out; llmcalc matches that Parameter count (the checkpoint stores 58 x 256 = 14,848 more values).
    assert spec_of("deepseek-v3").router_bias is False


@pytest.mark.parametrize("stem, changes, window, layers", [
    ("mistral-7b-v0.1", {}, 4096, None),  # every layer
    ("mixtral-8x7b-v0.1", {}, None, None),  # sliding_window null
    ("phi-3-mini-4k", {}, 2047, None),
    ("starcoder2-3b", {}, 4096, None),
    ("gemma-2-2b", {}, 4096, 13),  # every other layer of 26
    ("gemma-3-1b", {}, 512, 22),  # 5 local : 1 global over 26
    ("c4ai-command-r7b-12-2024", {}, 4096, 24),  # 3 local : 1 global over 32
    ("qwen2.5-0.5b", {}, None, None),  # use_sliding_window false
    ("qwen2.5-0.5b", {"use_sliding_window": True, "max_window_layers": 20}, 32768, 4),  # layers 20..23
    ("qwen2.5-0.5b", {"use_sliding_window": True, "max_window_layers": 0}, 32768, None),
    ("gemma-2-2b", {"layer_types": ["sliding_attention"] * 3 + ["full_attention"] * 23}, 4096, 3),
    ("mistral-7b-v0.1", {"sliding_window": ...}, 4096, None),  # MistralConfig's default
])
def test_sliding_window_layers(stem, changes, window, layers):
    s = spec_of(stem, **changes)
    assert (s.sliding_window, s.sliding_window_layers) == (window, layers)


def test_opt_positions_offset_by_two_and_post_norm_variant():
    small, medium = spec_of("opt-125m"), spec_of("opt-350m")
    assert small.position_offset == 2 and params.count(small)["embedding/position"] == 2050 * 768
    assert small.final_norm and not medium.final_norm  # do_layer_norm_before false: no final norm


def test_bloom_embedding_norm_and_alibi():
    s = spec_of("bloom-560m")
    assert s.embedding_norm and s.position_embedding == "alibi"


def test_falcon_kv_heads_from_multi_query_or_num_kv_heads():
    assert spec_of("falcon-7b").num_key_value_heads == 1  # multi_query
    assert spec_of("falcon-40b").num_key_value_heads == 8  # new_decoder_architecture + num_kv_heads
    assert spec_of("falcon-rw-1b").num_key_value_heads == 32  # multi_query false
    assert spec_of("falcon-rw-1b").position_embedding == "alibi"


def test_lm_head_bias_and_untied_embed_out():
    assert spec_of("phi-2").lm_head_bias and spec_of("gpt-j-6b").lm_head_bias
    assert params.count(spec_of("pythia-160m"))["lm_head"] == 50304 * 768  # embed_out, untied


def test_olmo_layernorm_has_no_parameters():
    s = spec_of("olmo-1b-hf")
    assert s.norm_affine is False and params.count(s)["norm"] == 0


def test_partial_rotary_adds_no_parameters():
    assert params.count(spec_of("phi-2", partial_rotary_factor=1.0))["total"] == TRANSFORMERS["phi-2"][0]


@pytest.mark.parametrize("stem, fields", [("mixtral-8x7b-v0.1", ("num_local_experts", "num_experts_per_tok")),
                                          ("qwen1.5-moe-a2.7b", ("shared_expert_intermediate_size",)),
                                          ("qwen3-30b-a3b", ("num_experts", "num_experts_per_tok"))])
def test_an_moe_config_without_its_counts_takes_the_config_classs_defaults(stem, fields):
    """MixtralConfig's 8 experts, top-2 and Qwen3MoeConfig's 128, top-8 (transformers 5.23) are these models' own:
    a config.json that leaves them out is the same model, as from_pretrained reads it, not a dense one."""
    cfg = {k: v for k, v in config(stem).items() if k not in fields}
    spec = hfconfig.from_config(cfg, stem)
    assert spec.is_moe and params.count(spec)["total"] == TRANSFORMERS[stem][0]


# -- unknown model types -------------------------------------------------------------------------

def test_unknown_model_type_names_the_supported_ones():
    with pytest.raises(SpecError, match="model_type 'my_llama' is not supported; supported: .*llama.*qwen3_moe"):
        hfconfig.from_config({**config("llama-3.2-1b"), "model_type": "my_llama"}, "mine")


def test_generic_maps_standard_fields_and_warns_once_listing_ignored_fields():
    cfg = {**config("llama-3.2-1b"), "model_type": "my_llama", "num_local_experts": 8, "my_gate": True}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec = hfconfig.from_config(cfg, "mine", generic=True)
    assert len(caught) == 1 and caught[0].category is HFConfigWarning
    message = str(caught[0].message)
    assert "ignored fields: my_gate, num_local_experts" in message
    assert "bos_token_id" in message.split("no effect on size")[1]  # listed too, separately
    assert params.count(spec)["total"] == TRANSFORMERS["llama-3.2-1b"][0]


def test_generic_reads_gpt2_style_names():
    cfg = {"model_type": "new_thing", "n_embd": 256, "n_layer": 2, "n_head": 4, "vocab_size": 1000}
    with pytest.warns(HFConfigWarning) as caught:
        spec = hfconfig.from_config(cfg, "new", generic=True)
    assert (spec.hidden_size, spec.intermediate_size, spec.max_position_embeddings) == (256, 1024, 2048)
    # what it assumed for the absent fields is said, beside what it ignored
    assumed = str(caught[0].message).split("absent, so assumed: ")[1]
    assert "intermediate_size 1024" in assumed and "max_position_embeddings 2048" in assumed
    assert "hidden_act silu" in assumed and "tie_word_embeddings false" in assumed


def test_missing_required_field_is_a_spec_error():
    cfg = config("llama-3.2-1b")
    del cfg["hidden_size"]
    with pytest.raises(SpecError, match="config.json has no hidden_size"):
        hfconfig.from_config(cfg, "broken")


def test_wrongly_typed_field_is_a_spec_error():
    with pytest.raises(SpecError, match="num_hidden_layers must be a whole number"):
        hfconfig.from_config({**config("llama-3.2-1b"), "num_hidden_layers": "16"}, "broken")


# -- finding config.json -------------------------------------------------------------------------

def test_load_a_config_path_and_a_model_directory(tmp_path):
    model_dir = tmp_path / "Llama-3.2-1B"
    model_dir.mkdir()
    (model_dir / "config.json").write_text((DATA / "llama-3.2-1b.json").read_text())
    by_dir = hfconfig.load(str(model_dir))
    by_file = hfconfig.load(str(model_dir / "config.json"))
    assert by_dir == by_file and by_dir.name == "Llama-3.2-1B"
    assert hfconfig.load(str(DATA / "gpt2.json")).name == "gpt2"
    assert presets.load_model(str(model_dir)) == by_dir  # --model DIR


def test_directory_without_config_json(tmp_path):
    with pytest.raises(SpecError, match="no config.json in this directory"):
        hfconfig.load(str(tmp_path))


def test_missing_json_path(tmp_path):
    with pytest.raises(SpecError, match="no such file or directory"):
        hfconfig.load(str(tmp_path / "nope.json"))


def _snapshot(cache: Path, repo: str, revision: str, stem: str, mtime: float) -> Path:
    snap = cache / ("models--" + repo.replace("/", "--")) / "snapshots" / revision
    snap.mkdir(parents=True)
    (snap / "config.json").write_text((DATA / f"{stem}.json").read_text())
    os.utime(snap, (mtime, mtime))
    return snap


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("hfconfig touched the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_hub_id_from_the_local_cache_newest_snapshot(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    now = time.time()
    _snapshot(tmp_path, "meta-llama/Llama-3.2-1B", "a" * 40, "gpt2", now - 100)
    _snapshot(tmp_path, "meta-llama/Llama-3.2-1B", "b" * 40, "llama-3.2-1b", now)
    spec = hfconfig.load("meta-llama/Llama-3.2-1B")
    assert spec.name == "meta-llama/Llama-3.2-1B" and spec.hidden_size == 2048
    assert spec.source == "https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json"
    assert presets.load_model("meta-llama/Llama-3.2-1B") == spec  # --model ORG/NAME


def test_hub_id_respects_refs_main(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    now = time.time()
    _snapshot(tmp_path, "org/model", "a" * 40, "gpt2", now - 100)
    _snapshot(tmp_path, "org/model", "b" * 40, "llama-3.2-1b", now)
    (tmp_path / "models--org--model" / "refs").mkdir()
    (tmp_path / "models--org--model" / "refs" / "main").write_text("a" * 40)
    assert hfconfig.load("org/model").hidden_size == 768


def test_hub_cache_defaults_to_hf_home_then_home(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hfconfig.hub_cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.delenv("HF_HOME")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hfconfig.hub_cache_dir() == tmp_path / ".cache" / "huggingface" / "hub"
    _snapshot(tmp_path / ".cache" / "huggingface" / "hub", "org/x", "c" * 40, "gpt2", time.time())
    assert hfconfig.load("org/x").hidden_size == 768


def test_hub_id_not_in_cache_says_how_to_get_it(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(SpecError) as err:
        hfconfig.load("Qwen/Qwen3-0.6B")
    message = str(err.value)
    assert "\n" not in message and "not in the local Hugging Face cache" in message
    assert "huggingface-cli download Qwen/Qwen3-0.6B config.json" in message and "config.json" in message


def test_malformed_json_names_file_and_line(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{\n  "model_type": "llama",\n  "hidden_size": 2048,,\n}\n')
    with pytest.raises(SpecError, match=rf"{bad}:3: malformed JSON"):
        hfconfig.load(str(bad))


def test_json_that_is_not_an_object(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("[1, 2]")
    with pytest.raises(SpecError, match="must be a JSON object"):
        hfconfig.load(str(bad))


def test_import_is_light():
    code = "import sys, llmcalc.hfconfig; print(sorted(m for m in ('yaml', 'typer', 'rich', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- preset export -------------------------------------------------------------------------------

@pytest.mark.parametrize("stem", sorted(set(TRANSFORMERS) | set(REMOTE_CODE)))
def test_model_to_yaml_round_trips(stem):
    spec = spec_of(stem)
    text = presets.model_to_yaml(spec, f"tests/data/hf/{stem}.json")
    data = yaml.safe_load(text)
    assert list(data) == [spec.name]
    assert presets.model_from_fields(spec.name, data[spec.name], "export") == spec


def test_preset_yaml_states_core_fields_and_only_non_default_others():
    text = presets.model_to_yaml(spec_of("qwen3-0.6b"), "Qwen/Qwen3-0.6B")
    fields = yaml.safe_load(text)["qwen3-0.6b"]
    for key in ("hidden_size", "num_key_value_heads", "norms_per_layer", "dropout", "attention_bias", "aliases"):
        assert key in fields
    assert fields["qk_norm"] == "head" and fields["head_dim"] == 128
    assert "sliding_window" not in fields and "num_experts" not in fields and "parallel_attn" not in fields
    assert text.startswith("# Imported from Qwen/Qwen3-0.6B")
    keys = list(fields)
    assert keys[:4] == ["aliases", "hidden_size", "num_hidden_layers", "num_attention_heads"]
    assert keys[-2:] == ["source", "notes"]


def test_exported_preset_loads_by_name(tmp_path, monkeypatch):
    spec = spec_of("gemma-2-2b")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine.yaml").write_text(presets.model_to_yaml(spec, "google/gemma-2-2b"))
    monkeypatch.setenv("LLMCALC_PRESETS", str(tmp_path))
    presets.catalog.cache_clear()
    assert presets.load_model("gemma-2-2b") == spec
