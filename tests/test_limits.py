"""max-seq and max-batch: seed examples, agreement with `memory` at the boundary, monotonicity."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmcalc.limits import largest, max_batch_breakdown, max_seq_breakdown
from llmcalc.memory import MemorySettings, memory_breakdown
from llmcalc.presets import load_gpu, load_model
from llmcalc.spec import Parallelism

from .conftest import run, run_json, value


def test_largest_finds_the_boundary():
    assert largest(lambda k: k <= 1000) == 1000
    assert largest(lambda k: k <= 1) == 1
    assert largest(lambda k: False) == 0
    assert largest(lambda k: True, cap=50) == 50


def test_seed_exercise_4_max_batch():
    # 2 x A800 at 80 GB (decimal) and 95% usable = 152 GB; 140 GB of fp16 weights; 1.31 GB of KV
    # per 4000-token request: the article reaches "about 8" with 10 of the 12 GB left for KV.
    data = run_json("max-batch", "--model", "llama-2-70b", "--gpu", "a800", "--gpus", "2", "--tp", "2",
                    "--seq", "4000", "--dtype", "fp16", "--gpu-memory", "80GB", "--gpu-util", "0.95")
    assert 6 <= value(data, "max_batch") <= 10
    # hand bound: (76e9 - 68,976,648,192 B of weights per GPU - 1 GiB reserve) / 655,360,000 B
    assert value(data, "max_batch") <= (76e9 - 68_976_648_192 - 2**30) / 655_360_000


def test_seed_mini_sequence_and_checkpointing_lengthen_max_seq():
    base = ["max-seq", "--model", "llama-3.2-1b", "--gpu", "l40s"]
    m4, m1 = (value(run_json(*base, "--mini-seq", n), "max_seq") for n in ("4", "1"))
    full, none = (value(run_json(*base, "--recompute", r), "max_seq") for r in ("full", "none"))
    assert m4 > m1 > 0 and full > none > 0


def _infer(seq: int = 4000, batch: int = 1) -> MemorySettings:
    return MemorySettings(mode="infer", seq=seq, batch=batch, dtype="fp16",
                          parallel=Parallelism.resolve(2, tp=2, mode="infer"))


def test_max_seq_agrees_with_memory_at_the_boundary():
    m, gpu = load_model("llama-3.2-3b"), load_gpu("a100-80gb")
    s = MemorySettings(recompute="full")
    best = max_seq_breakdown(m, gpu, s).summary["max_seq"]
    assert memory_breakdown(m, gpu, dataclasses.replace(s, seq=best)).summary["fits"]
    assert not memory_breakdown(m, gpu, dataclasses.replace(s, seq=best + 1)).summary["fits"]
    # and the CLI's `memory` says the same at that length
    assert best > 0
    assert run("memory", "--model", "llama-3.2-3b", "--gpu", "a100-80gb", "--recompute", "full",
               "--seq", str(best), "--check").exit_code == 0
    assert run("memory", "--model", "llama-3.2-3b", "--gpu", "a100-80gb", "--recompute", "full",
               "--seq", str(best + 1), "--check").exit_code == 1


def test_a_model_that_never_fits_says_zero():
    # Llama-3-8B full training at 16 B/param is 128 GB of model states: no sequence fits in 80 GiB
    data = run_json("max-seq", "--model", "llama-3-8b", "--gpu", "a100-80gb")
    assert value(data, "max_seq") == 0 and value(data, "dominant") == "optimizer"


def test_multiple_of_rounds_down():
    m, gpu = load_model("llama-3.2-3b"), load_gpu("a100-80gb")
    exact = max_seq_breakdown(m, gpu, MemorySettings()).summary["max_seq"]
    rounded = max_seq_breakdown(m, gpu, MemorySettings(), multiple_of=1024).summary["max_seq"]
    assert rounded % 1024 == 0 and exact - 1024 < rounded <= exact


def test_max_batch_agrees_with_memory_at_the_boundary():
    m, gpu = load_model("llama-2-70b"), load_gpu("a800")
    best = max_batch_breakdown(m, gpu, _infer()).summary["max_batch"]
    assert best > 0
    assert memory_breakdown(m, gpu, _infer(batch=best)).summary["fits"]
    assert not memory_breakdown(m, gpu, _infer(batch=best + 1)).summary["fits"]


def test_latency_target_can_be_the_tighter_limit():
    """Llama-3.1-8B, 2k in / 256 out, on an H100: memory holds 194 requests, but past 53 clients the prompt chunks
    that share the decode steps push the mean time between tokens over 20 ms (user audit: judged as one batch arriving
    together, it had said 141, where `latency --concurrency 64` misses the target)."""
    data = run_json("max-batch", "--model", "llama-3.1-8b", "--gpu", "h100", "--prompt", "2k", "--output", "256",
                    "--tpot-target", "20ms")
    assert value(data, "limited_by") == "latency"
    assert value(data, "max_batch") == value(data, "latency_max_batch") == 53 < value(data, "memory_max_batch") == 194


def test_limits_need_a_gpu_and_check_a_minimum():
    result = run("max-seq", "--model", "llama-3.2-1b")
    assert result.exit_code == 2 and "needs --gpu" in result.stderr
    assert run("max-batch", "--model", "gpt2").exit_code == 2
    assert run("max-seq", "--model", "llama-3.2-1b", "--gpu", "l40s", "--min", "32k", "--check").exit_code == 1
    assert run("max-seq", "--model", "llama-3.2-1b", "--gpu", "l40s", "--min", "1k", "--check").exit_code == 0


@settings(max_examples=15, deadline=None)
@given(st.integers(min_value=20, max_value=200), st.integers(min_value=1, max_value=60))
def test_more_memory_never_lowers_the_limits(gib, extra):
    m = load_model("llama-3.2-1b")
    small, big = MemorySettings(gpu_memory=gib * 2**30), MemorySettings(gpu_memory=(gib + extra) * 2**30)
    assert max_seq_breakdown(m, None, small).summary["max_seq"] <= max_seq_breakdown(m, None, big).summary["max_seq"]
    inf_small = MemorySettings(mode="infer", seq=2048, gpu_memory=gib * 2**30)
    inf_big = MemorySettings(mode="infer", seq=2048, gpu_memory=(gib + extra) * 2**30)
    assert (max_batch_breakdown(m, None, inf_small).summary["max_batch"]
            <= max_batch_breakdown(m, None, inf_big).summary["max_batch"])


@settings(max_examples=10, deadline=None)
@given(st.sampled_from([("llama-3.2-1b", "llama-3.2-3b"), ("llama-3-8b", "llama-3-70b"),
                        ("gpt2", "gpt2-medium"), ("qwen2.5-7b", "qwen2.5-72b")]),
       st.integers(min_value=24, max_value=400))
def test_a_bigger_model_never_raises_the_limits(pair, gib):
    small, big = (load_model(n) for n in pair)
    s = MemorySettings(gpu_memory=gib * 2**30)
    assert max_seq_breakdown(big, None, s).summary["max_seq"] <= max_seq_breakdown(small, None, s).summary["max_seq"]
    inf = MemorySettings(mode="infer", seq=2048, gpu_memory=gib * 2**30)
    assert max_batch_breakdown(big, None, inf).summary["max_batch"] <= max_batch_breakdown(small, None, inf).summary["max_batch"]


def test_serving_engines_stop_max_seq_at_the_models_context():
    """vLLM refuses a max_model_len beyond the config's (VLLM_ALLOW_LONG_MAX_MODEL_LEN); transformers runs on.

    Llama-3.1-8B on an H100: 0.9 x 79.2 GiB less ~16.5 GiB of weights and overheads leaves room for
    ~449k tokens at 128 KiB each (K and V, 32 layers x 8 kv heads x 128 x 2 B), beyond its 131,072.
    """
    m, gpu = load_model("llama-3.1-8b"), load_gpu("h100")
    vllm = max_seq_breakdown(m, gpu, MemorySettings(mode="infer")).summary
    assert vllm["max_seq"] == 131_072 and not vllm["limited_by_memory"]
    assert 440_000 < vllm["memory_max_seq"] < 460_000
    hf = max_seq_breakdown(m, gpu, MemorySettings(mode="infer", engine="hf")).summary
    assert hf["max_seq"] > 131_072 and hf["beyond_context"] and "memory_max_seq" not in hf
    rounded = max_seq_breakdown(m, gpu, MemorySettings(mode="infer"), multiple_of=100_000).summary
    assert rounded["max_seq"] == 100_000


def test_requests_hold_whole_blocks_and_the_engine_runs_max_num_seqs():
    """vLLM gives each request whole 16-token blocks: a 17-token request holds two, so the pool's blocks over two
    is the most that fit (V0 prints pool tokens / 17 as its concurrency, about 1.9 times more); and however many
    fit, it runs at most max_num_seqs at once."""
    import llmcalc

    b = llmcalc.max_batch("llama-3-8b", gpu="h100", seq=17, mode="infer", max_num_seqs=100_000,
                         prefill_chunk=100_000)  # vLLM wants a token a step for each request
    blocks = b.summary["kv_cache_capacity"] // 16
    assert b.summary["memory_max_batch"] == blocks // 2 and b.summary["max_batch"] == blocks // 2
    assert b.summary["max_concurrency"] == pytest.approx(blocks * 16 / 17, rel=1e-4)
    four = llmcalc.max_batch("llama-3-8b", gpu="h100", seq="4k", mode="infer", max_num_seqs=4)
    assert four.summary["max_batch"] == 4 and four.summary["limited_by"] == "max_num_seqs"
    assert four.summary["memory_max_batch"] > 100


def test_vllm_v0_schedules_each_pipeline_stage_on_its_own():
    """V0 builds one scheduler per virtual engine (pipeline stage), each with max_num_seqs of its own."""
    import llmcalc

    b = llmcalc.max_batch("llama-3.1-8b", gpu="h100", gpus=2, pp=2, seq=17, mode="infer", engine_version="0.7.3")
    assert b.summary["max_batch"] == 2 * 256 and b.summary["limited_by"] == "max_num_seqs"


def test_transformers_prefills_the_prompt_not_the_whole_context():
    """generate holds one forward's activations over the prompts, then the cache grows to prompt + output: at the
    same 2k context, a 1k prompt leaves room for more requests than a 2k one, and the note says which tokens."""
    args = ["max-batch", "--model", "llama-3.1-8b", "--gpu", "h100", "--engine", "hf", "--mode", "infer"]
    short = run_json(*args, "--prompt", "1k", "--output", "1k")
    long_ = run_json(*args, "--prompt", "2k", "--output", "1")
    assert value(short, "max_batch") > value(long_, "max_batch")
    note = next(r["note"] for r in short["rows"] if r["name"] == "activations")
    assert "x 1,024 tokens at once" in note
    assert short["inputs"]["prompt"] == 1024


def test_a_transformers_batch_has_its_last_first_token():
    """A batch arriving together at generate prefills in one step: its last first token is everyone's, and the JSON
    says so as it does for the engines that prefill in chunks."""
    import llmcalc

    r = llmcalc.latency("llama-3.1-8b", gpu="h100", engine="hf", batch=4)
    assert r.summary["ttft_last"] == pytest.approx(r.summary["ttft"])
    assert r.value("e2e_last") == pytest.approx(r.summary["e2e"])


def test_the_latency_limit_is_the_expected_one_latency_gives():
    """max-batch's latency limit is the most clients whose expected times (and bound) meet the targets, as
    `latency --concurrency` replays them: that many meet them and one more do not; transformers' host-bound
    decode (0.9 ms a layer) never meets a TPOT below 32 x 0.9 ms, so no batch does."""
    import llmcalc

    args = ["max-batch", "--model", "llama-3.1-8b", "--gpu", "h100", "--mode", "infer", "--prompt", "1k", "--output",
            "256"]
    n = value(run_json(*args, "--ttft-target", "100ms"), "latency_max_batch")
    meets = [llmcalc.latency("llama-3.1-8b", gpu="h100", concurrency=c, prompt=1024, output=256, ttft_target=0.1)
             .summary["ttft_expected_met"] for c in (n, n + 1)]
    assert n > 1 and meets == [True, False]
    assert value(run_json(*args, "--engine", "hf", "--tpot-target", "25ms"), "max_batch") == 0


def test_a_target_met_everywhere_leaves_the_limit_to_memory():
    """A target every batch meets does not limit the batch: memory does, however the engine sizes it (the latency
    search judges times, not memory); with a prompt given, only an engine whose prefill holds it records it."""
    for engine, extra in (("hf", ()), ("vllm", ("--gpu-util", "0.98"))):
        data = run_json("max-batch", "--model", "llama-3.1-8b", "--gpu", "h100", "--mode", "infer", "--engine", engine,
                        "--prompt", "1k", "--output", "1k", "--ttft-target", "100s", *extra)
        assert value(data, "limited_by") == "memory" and value(data, "max_batch") == value(data, "memory_max_batch")
        assert ("prompt" in data["inputs"]) == (engine == "hf")


def test_max_seq_takes_no_prompt():
    import llmcalc
    from llmcalc.spec import SpecError

    with pytest.raises(SpecError, match="max-seq searches the whole context"):
        llmcalc.max_seq("llama-3.1-8b", gpu="h100", mode="infer", engine="hf", prompt=1000)


def test_one_request_missing_only_the_bound_is_said_as_the_bound():
    """max-batch's --efficiency sets the roofline bound alone: at 0.2 an 8B decode step's bound is 22.8 ms while the
    expected time is 6.67 ms. A 15 ms TPOT target is missed by the bound, and the note says that, not the expected."""
    data = run_json("max-batch", "--model", "llama-3.1-8b", "--gpu", "h100", "--prompt", "2k", "--output", "256",
                    "--tpot-target", "15ms", "--efficiency", "0.2")
    note = next(n for n in data["notes"] if n.startswith("even one request"))
    assert "TPOT bound 22.8 ms against 15.0 ms" in note and "expected 6.67 ms" in note
    tight = run_json("max-batch", "--model", "llama-3.1-8b", "--gpu", "h100", "--prompt", "2k", "--output", "256",
                     "--tpot-target", "3ms")
    assert any("TPOT 6.67 ms (expected) against 3.00 ms" in n for n in tight["notes"])


def test_the_kv_pools_free_rest_is_not_what_dominates():
    """In inference the engine's pool fills the usable memory; its unused rest (kv_free) is room, not a consumer:
    for Llama-3.1-8B at its 131,072-token context the KV cache (16 GiB) outweighs the weights (15 GiB)."""
    data = run_json("max-seq", "--model", "llama-3.1-8b", "--gpu", "h100", "--mode", "infer")
    assert data["summary"]["dominant"] == "kv_cache"
    assert "(memory_max_seq + 1)" in next(r["note"] for r in data["rows"] if r["name"] == "next_total")


def test_where_no_length_fits_the_rows_say_what_they_show():
    """Full training of Llama-3.1-8B needs 16 B/param, 120 GiB, on an 80 GB H100: nothing fits, and the table's
    memory is that of the 1-token probe, said on max_seq's row (no next_total repeating it)."""
    data = run_json("max-seq", "--model", "llama-3.1-8b", "--gpu", "h100")
    rows = {r["name"]: r for r in data["rows"]}
    assert rows["max_seq"]["value"] == 0 and "the rows below are the memory at 1 token" in rows["max_seq"]["note"]
    assert "next_total" not in rows


def test_a_latency_search_past_the_replays_clients_says_at_least():
    """Llama-3.2-1B, 128 in / 128 out on an H200: memory holds 15,618 requests; a replay runs 2,000 clients at most, so
    the latency search stops there and says 'at least', where it used to refuse a --concurrency nobody gave."""
    data = run_json("max-batch", "--model", "llama-3.2-1b", "--gpu", "h200", "--prompt", "128", "--output", "128",
                    "--tpot-target", "1s")
    row = next(r for r in data["rows"] if r["name"] == "latency_max_batch")
    assert row["value"] == 2000 and row["note"].startswith("at least 2,000")
    assert value(data, "limited_by") == "max_num_seqs" and value(data, "max_batch") == 256
