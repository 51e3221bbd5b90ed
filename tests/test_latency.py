"""Latency roofline and KV cache against the article's exercises and hand derivations."""

from __future__ import annotations

import pytest

from llmcalc.kvcache import kv_cache_bytes
from llmcalc.presets import load_gpu, load_model
from llmcalc.throughput import ServeSettings, latency_breakdown, weight_bytes_read

from .conftest import run, run_json, value


def test_kv_cache_seed_exercise_4():
    # L · S · g · d · 2 · sizeof(fp16) = 80 · 4000 · 8 · 128 · 2 · 2 = 1.31 GB per request
    m = load_model("llama-2-70b")
    assert kv_cache_bytes(m, 4000, 1, 2) == 80 * 4000 * 8 * 128 * 2 * 2 == 1_310_720_000
    assert kv_cache_bytes(m, 4000, 1, 2, tp=2) == 655_360_000
    # TP 16 > 8 kv heads: every rank keeps one (replicated) head
    assert kv_cache_bytes(m, 4000, 1, 2, tp=16) == 80 * 4000 * 1 * 128 * 2 * 2


def test_kv_cache_mla_latent_and_sliding_window():
    # DeepSeek-V3: one latent of 512 + rope key 64 per layer, no factor 2, 61 layers
    assert kv_cache_bytes(load_model("deepseek-v3"), 1000, 1, 2) == 61 * 1000 * (512 + 64) * 2
    # Mistral-7B: every layer keeps at most its 4096-token window
    mistral = load_model("mistral-7b")
    assert kv_cache_bytes(mistral, 32768, 1, 2) == kv_cache_bytes(mistral, 4096, 1, 2) == 32 * 4096 * 2 * 8 * 128 * 2
    # Gemma-2-9B: 21 of 42 layers windowed at 4096
    gemma = load_model("gemma-2-9b")
    assert kv_cache_bytes(gemma, 8192, 1, 2) == (21 * 4096 + 21 * 8192) * 2 * 8 * 256 * 2


def test_seed_exercise_3_is_infeasible():
    # 16 x 4000 tokens x 2 x 70e9 = 8.96e15 FLOP over 8 x 312 TFLOP/s = 3.59 s >> 650 ms
    data = run_json("latency", "--model", "llama-2-70b", "--gpu", "a800", "--gpus", "8", "--batch", "16",
                    "--prompt", "4000", "--efficiency", "1", "--ttft-target", "650ms", "--check")
    assert value(data, "feasible") is False
    assert 3.4 <= value(data, "ttft") <= 4.2
    result = run("latency", "--model", "llama-2-70b", "--gpu", "a800", "--gpus", "8", "--batch", "16",
                 "--prompt", "4000", "--efficiency", "1", "--ttft-target", "650ms", "--check")
    assert result.exit_code == 1


def test_prefill_projects_only_the_sampled_position_to_logits():
    """Llama-3.2-1B, one 2048-token prompt: the LM head at the 2047 positions an engine never samples is
    2 x 2047 x 2048 hidden x 128,256 vocab = 1.075 TFLOP, a fifth of the forward pass counted at every position."""
    from llmcalc.flops import forward

    m = load_model("llama-3.2-1b")
    every, last = forward(m, 2048, 2048, "causal"), forward(m, 2048, 2048, "causal", logits=1)
    head = 2 * 2047 * 2048 * 128_256
    assert every["forward"] - last["forward"] == head == pytest.approx(1.075e12, rel=1e-3)
    assert head / every["forward"] == pytest.approx(0.20, abs=0.01)
    b = latency_breakdown(m, load_gpu("h100-sxm"), ServeSettings(batch=1, prompt=2048, output=1,
                                                                 compute_efficiency=1))
    assert b.value("prefill/compute") == pytest.approx(last["forward"] / 989.4e12)


def test_a_batchs_ttft_target_holds_for_its_last_request():
    """32 prompts arriving together: the expected mean first token beats 1 s, the last does not, and the bound
    (every prompt prefilled) sits below the last one's expected time, so both verdicts say no."""
    args = ("latency", "--model", "llama-3.1-8b", "--gpu", "h100", "--prompt", "2k", "--output", "64", "--batch",
            "32", "--ttft-target", "1s")
    data = run_json(*args)
    assert value(data, "ttft") < 1 < value(data, "ttft_last")
    assert value(data, "ttft_bound") <= value(data, "ttft_last")
    assert value(data, "ttft_expected_met") is False and value(data, "ttft_met") is False
    assert run(*args, "--check").exit_code == 1


def test_decode_is_bandwidth_bound_for_one_request():
    # One request, first decode step: read 2 B x (6,738,415,616 - 32000 x 4096 untied embedding
    # rows, a lookup) weights + a 2-token KV cache (2 x 32 layers x 4096 x 2 B per token), 3.35 TB/s.
    m, gpu = load_model("llama-2-7b"), load_gpu("h100-sxm")
    b = latency_breakdown(m, gpu, ServeSettings(batch=1, prompt=1, output=2, compute_efficiency=1,
                                                bandwidth_efficiency=1))
    expected = (2 * (6_738_415_616 - 32000 * 4096) + 2 * 2 * 32 * 4096 * 2) / 3.35e12
    assert b.value("tpot") == pytest.approx(expected)
    assert b.summary["decode_bound"] == "memory"


def test_moe_decode_reads_only_touched_experts():
    # Mixtral, one token: 2 of 8 experts per layer -> the 12.88B active parameters, less the
    # untied input embedding (32000 x 4096), which is looked up, not read
    m = load_model("mixtral-8x7b")
    assert weight_bytes_read(m, 1, "fp32") / 4 == pytest.approx(12_879_925_248 - 32000 * 4096)
    assert weight_bytes_read(m, 1000, "fp32") / 4 == pytest.approx(46_702_792_704 - 32000 * 4096, rel=1e-6)


def test_replicated_kv_is_read_on_every_gpu():
    # DeepSeek-V3's MLA latent (512 + 64 per layer) sits whole on each of 8 TP ranks: per GPU,
    # one decode step reads weights / 8 plus the whole cache.
    m, gpu = load_model("deepseek-v3"), load_gpu("h200")
    s = ServeSettings(batch=16, prompt=32768, output=2, tp=8, dtype="fp8", kv_dtype="bf16",
                      compute_efficiency=1, bandwidth_efficiency=1)
    b = latency_breakdown(m, gpu, s)
    kv = 16 * 61 * 32769 * (512 + 64) * 2  # the one decode step: prompt + the first output token
    assert b.value("decode/memory") == pytest.approx((weight_bytes_read(m, 16, "fp8") / 8 + kv) / 4.8e12)


def test_latency_checks_layout_and_fit():
    result = run("latency", "--model", "falcon-7b", "--gpu", "h100", "--gpus", "2")
    assert result.exit_code == 2 and "71" in result.stderr  # 71 heads cannot split over 2 GPUs
    data = run_json("latency", "--model", "llama-3.1-405b", "--gpu", "l4", "--ttft-target", "100s", "--check")
    assert value(data, "fits") is False and value(data, "feasible") is False


def test_tensor_parallel_adds_allreduce_time():
    # 2 all-reduces per layer of b·s·h 16-bit values; a ring moves 2(t-1)/t of them per GPU.
    m, gpu = load_model("llama-2-7b"), load_gpu("a100-80gb")
    b = latency_breakdown(m, gpu, ServeSettings(batch=1, prompt=1000, output=1, tp=4, overlap=False))
    expected = 2 * 32 * 1000 * 4096 * 2 * (2 * 3 / 4) / 300e9
    assert b.value("prefill/communication") == pytest.approx(expected)
    assert b.value("ttft") == pytest.approx(max(b.value("prefill/compute"), b.value("prefill/memory")) + expected)


def test_tpot_target_check_passes_when_reachable():
    result = run("latency", "--model", "llama-3-8b", "--gpu", "h100", "--tpot-target", "1s", "--check")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("model", ["llama-3.1-8b", "gemma-2-9b", "mistral-7b", "deepseek-v3"])
def test_the_decode_loop_counts_positions_as_the_general_functions_do(model):
    """latency_breakdown's decode loop works out one query's attended pairs and the KV bytes a step reads
    once per step from min(context, window); both general functions agree at every context around the window."""
    from llmcalc.flops import attended_pairs
    from llmcalc.kvcache import cached_positions, kv_cache_bytes, kv_values_per_token_layer
    from llmcalc.presets import load_model

    m = load_model(model)
    L, W, window = m.num_hidden_layers, m.window_layers, m.sliding_window
    for context in [1, 2, 100, 4095, 4096, 4097, 8191, 131_072] + ([window - 1, window, window + 1] if window else []):
        positions = W * min(context, window or context) + (L - W) * context
        assert positions == W * attended_pairs(1, context, "causal", window) + (L - W) * context
        assert positions == cached_positions(m, context)
        for tp, requests in ((1, 3), (2, 17)):
            assert requests * positions * (kv_values_per_token_layer(m, tp) * 2) == kv_cache_bytes(m, context, requests, 2, tp)
