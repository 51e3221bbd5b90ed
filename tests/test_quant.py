"""Quantized checkpoints as they ship: quantization_config read from config.json, weight bytes
against what vLLM logged after loading them ("Model loading took X GiB")."""

from __future__ import annotations

import json

import pytest

from llmcalc.hfconfig import from_config
from llmcalc.memory import MemorySettings, memory_breakdown
from llmcalc.presets import load_model
from llmcalc.quant import kept_fraction, matches
from llmcalc.spec import Parallelism

from .conftest import run, run_json, value

GiB = 2**30
LLAMA_31_70B = {"model_type": "llama", "hidden_size": 8192, "num_hidden_layers": 80, "num_attention_heads": 64,
                "num_key_value_heads": 8, "vocab_size": 128256, "intermediate_size": 28672,
                "max_position_embeddings": 131072, "tie_word_embeddings": False}
QWEN25_14B = {"model_type": "qwen2", "hidden_size": 5120, "num_hidden_layers": 48, "num_attention_heads": 40,
              "num_key_value_heads": 8, "vocab_size": 152064, "intermediate_size": 13824,
              "max_position_embeddings": 32768, "tie_word_embeddings": False, "use_sliding_window": False}
PHI_4 = {"model_type": "phi3", "hidden_size": 5120, "num_hidden_layers": 40, "num_attention_heads": 40,
         "num_key_value_heads": 10, "vocab_size": 100352, "intermediate_size": 17920,
         "max_position_embeddings": 16384, "tie_word_embeddings": False}

W8A8 = {"quant_method": "compressed-tensors", "format": "int-quantized", "ignore": ["lm_head"],
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 8, "type": "int",
                                                                         "strategy": "channel", "symmetric": True}}}}
FP8_DYNAMIC = {"quant_method": "compressed-tensors", "format": "float-quantized", "ignore": ["lm_head"],
               "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 8, "type": "float",
                                                                                "strategy": "channel"}}}}
GPTQ_4BIT = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True}


def vllm_weights(config: dict, quantization: dict, tp: int = 1) -> float:
    m = from_config({**config, "quantization_config": quantization}, "checkpoint")
    s = MemorySettings(mode="infer", seq=2048, engine_version="0.6.4", parallel=Parallelism(gpus=tp, tp=tp))
    return memory_breakdown(m, None, s).value("weights") / GiB


@pytest.mark.parametrize("config,quantization,tp,logged", [
    # neuralmagic/Meta-Llama-3.1-70B-Instruct-quantized.w8a8 on 2 x A40, vLLM 0.5.4: "took 33.8807 GB"
    (LLAMA_31_70B, W8A8, 2, 33.8807),
    # neuralmagic/Qwen2.5-14B-Instruct-FP8-dynamic, vLLM V1: "Model loading took 15.2227 GiB"
    (QWEN25_14B, FP8_DYNAMIC, 1, 15.2227),
    # kaitchup/Phi-4-AutoRound-GPTQ-4bit with gptq_marlin, vLLM ~0.6.5: "took 8.5107 GB"
    (PHI_4, GPTQ_4BIT, 1, 8.5107),
])
def test_checkpoint_weights_as_vllm_logged(config, quantization, tp, logged):
    assert vllm_weights(config, quantization, tp) == pytest.approx(logged, rel=0.01)


def test_w8a8_by_hand():
    # int8 linears + one fp32 scale per output row, bf16 embedding and head, norms, the 131072 x 128
    # bf16 rotary table; TP 2 splits all but the norms
    m = from_config({**LLAMA_31_70B, "quantization_config": W8A8}, "w8a8")
    linears = 80 * (8192 * 8192 * 2 + 8192 * 1024 * 2 + 3 * 8192 * 28672)
    rows = 80 * (8192 * 2 + 1024 * 2 + 28672 * 2 + 8192)  # output rows: q, o, k, v, gate, up, down
    expected = (linears + 4 * rows) / 2 + 2 * 128256 * 8192 * 2 / 2 + (80 * 2 + 1) * 8192 * 2 + 131072 * 128 * 2
    s = MemorySettings(mode="infer", seq=2048, parallel=Parallelism(gpus=2, tp=2))
    assert memory_breakdown(m, None, s).value("weights") == pytest.approx(expected, rel=1e-4)


def test_awq_pays_scales_and_zero_points_per_group():
    awq = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}
    m = from_config({**QWEN25_14B, "quantization_config": awq}, "awq")
    b = memory_breakdown(m, None, MemorySettings(mode="infer", seq=2048, engine="hf"))
    linears = b.value("weights/quantized") * 2  # 4 bits each
    assert b.value("weights/scales") == pytest.approx(linears * (2 + 0.5) / 128, rel=1e-9)  # fp16 scale + 4-bit zero


def test_listed_modules_stay_16bit():
    down0 = 5120 * 13824  # model.layers.0.mlp.down_proj
    ignore = {**FP8_DYNAMIC, "ignore": ["lm_head", "model.layers.0.mlp.down_proj", "re:.*mlp.gate$"]}
    m = from_config({**QWEN25_14B, "quantization_config": ignore}, "fp8")
    total = 48 * (5120 * 5120 * 2 + 5120 * 1024 * 2 + 3 * 5120 * 13824)
    assert kept_fraction(m, m.quant_skip) == pytest.approx(down0 / total)
    assert matches("model.layers.3.mlp.gate", "re:.*mlp.gate$") and not matches("model.layers.3.mlp.gate_proj", "mlp.gate")


def test_keep_16bit_on_the_command_line():
    base = ["memory", "--mode", "infer", "--model", "llama-3.1-8b", "--dtype", "int4", "--engine", "hf"]
    plain, kept = run_json(*base), run_json(*base, "--keep-16bit", "model.layers.0,model.layers.31")
    layer = 4096 * 4096 * 2 + 4096 * 1024 * 2 + 3 * 4096 * 14336
    assert value(kept, "weights") - value(plain, "weights") == pytest.approx(2 * layer * (2 - 0.5 - 2 / 128), abs=2)
    assert kept["inputs"]["keep_16bit"] == ["model.layers.0", "model.layers.31"]


def test_checkpoint_format_unless_dtype_says_otherwise(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**QWEN25_14B, "quantization_config": GPTQ_4BIT}), encoding="utf-8")
    own = run_json("memory", "--mode", "infer", "--model", str(path), "--engine", "hf")
    forced = run_json("memory", "--mode", "infer", "--model", str(path), "--engine", "hf", "--dtype", "bf16")
    assert own["inputs"]["dtype"] == "int4" and own["inputs"]["weight_format"] == "checkpoint"
    assert value(forced, "weights") > 2.5 * value(own, "weights")


def test_unknown_quantization_is_one_clear_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**QWEN25_14B, "quantization_config": {"quant_method": "hqq"}}), encoding="utf-8")
    result = run("params", "--model", str(path))
    assert result.exit_code == 2
    assert "quant_method 'hqq' is not supported" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_presets_stay_unquantized():
    assert load_model("llama-3.1-8b").quant_method is None


def test_params_sizes_a_quantized_checkpoint_as_it_ships():
    """The README's promise: a config.json with a quantization_config is sized as it ships in params too, the
    same weight bytes `memory --mode infer` loads (less the buffers it builds beside them); --dtype overrides it.
    A quantized format is for inference: its checkpoint has no optimizer states."""
    import llmcalc

    m = from_config({**QWEN25_14B, "quantization_config": GPTQ_4BIT}, "gptq")
    p = llmcalc.params(m)
    b = memory_breakdown(m, None, MemorySettings(mode="infer", seq=2048, gpu_memory=80 * GiB))
    rows = {row.name: row.value for row in b.rows}
    weights = rows["weights"] - rows.get("weights/buffers", 0)
    assert p.summary["weight_bytes"] == pytest.approx(weights, abs=1)
    assert p.summary["checkpoint_bytes"] == p.summary["weight_bytes"] and p.summary["optimizer_states"] == 0
    assert llmcalc.params(m, dtype="bf16").summary["weight_bytes"] == 2 * p.summary["total"]
    gguf = llmcalc.params("llama-2-7b", dtype="q4_k_m").summary
    assert isinstance(gguf["checkpoint_bytes"], int) and gguf["checkpoint_bytes"] == gguf["weight_bytes"]
