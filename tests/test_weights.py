"""One rule for what a model's weights weigh in a dtype: params, memory and latency all use it.

Hand derivation for llama-3-8b in int4 (GPTQ/AWQ layout): the block linears, 32 x (2·4096² +
2·4096·1024 + 3·4096·14336) = 6,979,321,856 weights, at half a byte plus one fp16 scale per 128;
the other 1,050,939,392 parameters (embedding, head, norms) stay 16-bit: 5,700,591,616 B = 5.31 GiB.
"""

from __future__ import annotations

import pytest

from llmcalc.memory import MemorySettings, memory_breakdown
from llmcalc.params import params_breakdown
from llmcalc.presets import load_model
from llmcalc.spec import ModelSpec
from llmcalc.throughput import weight_bytes_read

LLAMA3_8B_LINEARS = 32 * (2 * 4096**2 + 2 * 4096 * 1024 + 3 * 4096 * 14336)
LLAMA3_8B_TOTAL = 8_030_261_248


def test_llama3_8b_int4_by_hand():
    expected = LLAMA3_8B_LINEARS / 2 + LLAMA3_8B_LINEARS / 128 * 2 + (LLAMA3_8B_TOTAL - LLAMA3_8B_LINEARS) * 2
    assert expected == 5_700_591_616
    assert params_breakdown(load_model("llama-3-8b"), "int4").summary["weight_bytes"] == expected


@pytest.mark.parametrize("model", ["llama-3-8b", "mixtral-8x7b", "gemma-2-9b", "gpt2", "deepseek-v3"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp8", "int8", "int4", "fp4"])
def test_params_memory_and_latency_agree(model, dtype):
    m = load_model(model)
    params = params_breakdown(m, dtype).summary["weight_bytes"]
    memory = memory_breakdown(m, None, MemorySettings(mode="infer", dtype=dtype, seq=16, engine="hf")).value("weights")
    assert memory == round(params)
    # latency reads every weight once all experts are touched, less the untied embedding (a lookup)
    lookup = 0 if m.tie_word_embeddings else m.vocab_size * m.hidden_size * (4 if dtype == "fp32" else 2)
    assert weight_bytes_read(m, 10**6, dtype) + lookup == pytest.approx(params, rel=1e-12)


def test_adafactor_state_is_rows_plus_cols_by_hand():
    # Shazeer & Stern 2018: one factored second moment, rows + cols per matrix, full size for vectors.
    # h 4, one layer, one head, F 8, vocab 10, 16 learned positions, LayerNorm with bias, tied head:
    # q, k, v, proj 4 x (4 + 4) = 32; up, down 2 x (4 + 8) = 24; token table 10 + 4; positions
    # 16 + 4; two block norms and the final norm, 2 x 4 each: 24. Total 114 values, 2 B each in bf16.
    tiny = ModelSpec(name="tiny", hidden_size=4, num_hidden_layers=1, num_attention_heads=1, vocab_size=10,
                     intermediate_size=8, max_position_embeddings=16, mlp_type="plain", norm_type="layernorm",
                     norm_bias=True, position_embedding="learned", tie_word_embeddings=True,
                     attention_bias=False, attention_out_bias=False, mlp_bias=False)
    b = params_breakdown(tiny, "bf16", "adafactor", "bf16")  # pure bf16: the state in bf16, no master copy
    assert b.summary["optimizer_states"] == 1
    assert b.summary["checkpoint_bytes"] - b.summary["weight_bytes"] == 114 * 2
    # mixed precision (the default): an fp32 master of every parameter, the state in fp32. The parameters: q, k, v,
    # proj 4 x 16, up and down 2 x 32, token table 40, positions 64, norms 24 = 256
    mixed = params_breakdown(tiny, "bf16", "adafactor")
    assert mixed.summary["checkpoint_bytes"] - mixed.summary["weight_bytes"] == 256 * 4 + 114 * 4
