"""`latency` and `serve-plan` follow the engine as launched: its release (--engine-version), its share of GPU
memory (--gpu-util) and its longest request (--max-model-len), as `memory --mode infer` sizes them."""

from __future__ import annotations

import json
import re

from .conftest import run, run_json

LLAMA_8B = ("--model", "llama-3.1-8b", "--gpu", "h100", "--prompt", "2k", "--output", "256")
# Llama 3.1 8B's KV per token, by hand: 32 layers x 8 KV heads x 128 dims x (K and V) x 2 bytes (bf16)
KV_BYTES_PER_TOKEN = 32 * 8 * 128 * 2 * 2


def _replayed(*extra: str) -> dict:
    """latency under 32 closed-loop clients: the scheduler's budget and the KV capacity its note gives."""
    d = run_json("latency", *LLAMA_8B, "--concurrency", "32", *extra)
    note = next(n for n in d["notes"] if "replayed step by step" in n)
    budget, capacity = re.search(r"([\d,]+) tokens per step.*KV for ([\d,]+) tokens", note).groups()
    return {"budget": int(budget.replace(",", "")), "capacity": int(capacity.replace(",", "")), "json": d}


def test_gpu_util_sizes_the_kv_cache_as_memory_does():
    low, high = _replayed("--gpu-util", "0.5"), _replayed("--gpu-util", "0.9")
    mem = run_json("memory", "--mode", "infer", "--model", "llama-3.1-8b", "--gpu", "h100", "--seq", "2304",
                   "--gpu-util", "0.5")
    assert low["capacity"] == mem["summary"]["kv_cache_capacity"]
    # the weights and the profile's peak are the same at both shares: the pool grows by 0.4 of the GPU, in blocks
    grown = 0.4 * mem["summary"]["capacity"] / KV_BYTES_PER_TOKEN
    assert abs(high["capacity"] - low["capacity"] - grown) <= 2 * 16, (high["capacity"], low["capacity"], grown)
    assert low["json"]["inputs"]["gpu_util"] == 0.5


def test_the_engine_release_sets_the_schedulers_budget():
    """vLLM V0 without chunked prefill batches max(max_model_len, 2048) tokens a step (SchedulerConfig); V1
    (0.8+) on an 80 GB GPU 8192 (vllm serve's usage-context default)."""
    v0, v1 = _replayed("--engine-version", "0.6.4"), _replayed("--engine-version", "0.10.1")
    assert v0["budget"] == 2048 + 256 and v1["budget"] == 8192
    assert v0["json"]["inputs"]["engine_version"] == "0.6.4"
    # a longer --max-model-len raises V0's budget with it
    assert _replayed("--engine-version", "0.6.4", "--max-model-len", "16k")["budget"] == 16384


def test_a_max_model_len_past_the_kv_cache_does_not_start():
    """vLLM refuses to start unless its KV cache holds one request of max_model_len (check_enough_kv_cache_memory)."""
    args = ("latency", *LLAMA_8B, "--gpu-util", "0.3")
    refused = run(*args, "--max-model-len", "128k", "--check")
    assert refused.exit_code == 1 and "vLLM refuses to start" in refused.stderr, refused.stderr
    d = run_json(*args, "--max-model-len", "128k")
    assert d["summary"]["feasible"] is False and d["summary"]["fits"] is False
    held = int(re.search(r"holds ([\d,]+) tokens", d["notes"][0]).group(1).replace(",", ""))
    assert 16_000 < held < 131_072
    assert run(*args, "--max-model-len", str(held), "--check").exit_code == 0  # at what it holds, it starts


def test_a_max_model_len_below_the_request_is_refused_in_one_line():
    out = run("latency", *LLAMA_8B, "--max-model-len", "1k")
    assert out.exit_code == 2 and "--max-model-len 1,024 is shorter than --prompt + --output (2,304)" in out.stderr
    assert "Traceback" not in out.output


def test_serve_plan_rejects_a_layout_vllm_would_not_start():
    out = run("serve-plan", "--model", "llama-3.1-70b", "--gpu", "h100", "--request-rate", "2", "--prompt", "2k",
              "--output", "256", "--ttft-target", "1s", "--max-model-len", "128k", "--json")
    d = json.loads(out.stdout)
    why = {r["tp"]: r["why"] for r in d["summary"]["rejected"]}
    assert "vLLM refuses to start" in why[2]  # 70B in bf16 on two 80 GB GPUs: room for about 15k tokens
    assert all(x["tp"] >= 4 for x in d["summary"]["layouts"]) and d["inputs"]["max_model_len"] == 131_072


def test_a_sliding_window_model_is_refused_as_vllm_counts_its_blocks():
    """From vLLM 0.9.1 a sliding-window layer needs only its window's blocks, in the start-up check as in the memory
    model: Mistral-7B at 32k fits one request (max_concurrency >= 1) though its pool holds fewer than 32k tokens."""
    flags = ("--model", "mistral-7b", "--gpu", "h100", "--gpu-util", "0.22", "--engine-version", "0.10.1")
    mem = run_json("memory", "--mode", "infer", *flags, "--seq", "32k")
    assert mem["summary"]["kv_cache_capacity"] < 32_768 <= 32_768 * mem["summary"]["max_concurrency"]
    out = run("latency", *flags, "--prompt", "2k", "--output", "256", "--max-model-len", "32k", "--check")
    assert out.exit_code == 0, out.stderr


def test_serve_plan_refuses_a_bad_launch_setting_once():
    out = run("serve-plan", "--model", "llama-3.1-8b", "--gpu", "h100", "--request-rate", "2", "--prompt", "2k",
              "--output", "256", "--ttft-target", "1s", "--gpu-util", "1.5")
    assert out.exit_code == 2 and "--gpu-util must be in (0, 1], got 1.5" in out.stderr


LLAMACPP = ("latency", "--model", "llama-3.1-8b", "--gpu", "h100", "--engine", "llamacpp", "--dtype", "q4_k_m",
            "--prompt", "1000", "--output", "200", "--max-model-len", "128k")


def test_llama_server_allocates_a_context_for_each_slot_at_start():
    """llama-server's KV cache is n_ctx = slots x the context (-c, -np), all of it allocated as it starts: eight
    clients of 128k tokens need 8 x 131,072 cells x 128 KiB (fp16 K and V, by hand above) = 128 GiB of KV, more than
    an H100 holds, where two slots' 32 GiB fit."""
    eight, two = run_json(*LLAMACPP, "--concurrency", "8"), run_json(*LLAMACPP, "--concurrency", "8",
                                                                      "--max-num-seqs", "2")
    assert 8 * 131072 * KV_BYTES_PER_TOKEN / 2**30 == 128
    launched = run_json("memory", "--mode", "infer", "--model", "llama-3.1-8b", "--gpu", "h100", "--engine",
                        "llamacpp", "--dtype", "q4_k_m", "--seq", "131072", "--batch", "8")
    assert eight["summary"]["memory_total"] == launched["summary"]["total"] > eight["summary"]["usable"]
    assert not eight["summary"]["feasible"] and eight["notes"][0].startswith("does not fit")
    assert "n_ctx = 8 slot(s) x 131,072 tokens" in eight["notes"][0]
    assert two["summary"]["feasible"]
    assert any("at most 2 running requests, KV for 262,144 tokens" in n for n in two["notes"])


def test_llama_server_under_poisson_arrivals_runs_as_many_slots_as_fit():
    """An open loop has no client count: the slots are as many contexts as the memory holds (memory's
    max_concurrency, whole), each running one request."""
    d = run_json(*LLAMACPP[:-1], "8k", "--request-rate", "2")
    fits = run_json("memory", "--mode", "infer", "--model", "llama-3.1-8b", "--gpu", "h100", "--engine", "llamacpp",
                    "--dtype", "q4_k_m", "--seq", "8192")["summary"]["max_concurrency"]
    slots = int(fits)
    assert any(f"at most {slots} running requests, KV for {slots * 8192:,} tokens" in n for n in d["notes"])


def test_the_python_api_launches_the_engine_as_the_cli_does():
    import llmcalc

    api = llmcalc.latency("llama-3.1-8b", gpu="h100", prompt="2k", output=256, concurrency=32, max_model_len="32k",
                          gpu_util=0.5, engine_version="0.10.1")
    cli = run_json("latency", *LLAMA_8B, "--concurrency", "32", "--max-model-len", "32k", "--gpu-util", "0.5",
                   "--engine-version", "0.10.1")
    assert api.inputs["max_model_len"] == 32768 and api.summary["ttft"] == cli["summary"]["ttft"]


def test_llama_server_whose_weights_do_not_fit_is_refused_under_load():
    """Llama 3.1 70B in bf16 (141 GB) on one H100: no slot of any context fits, so nothing is replayed, by clients or
    by a rate: the answer is that it does not fit (infeasible, exit 1 under --check), as without a load, and a sweep
    over the GPU count goes on past it."""
    for load in (("--concurrency", "4"), ("--request-rate", "1")):
        args = ("latency", "--model", "llama-3.1-70b", "--gpu", "h100", "--engine", "llamacpp", "--prompt", "1000",
                "--output", "200", *load)
        d = run_json(*args)
        assert d["summary"]["fits"] is False and d["summary"]["feasible"] is False
        assert any("not replayed, as not one request of 1,200 tokens fits the KV cache" in n for n in d["notes"])
        out = run(*args, "--check")
        assert out.exit_code == 1 and "does not fit" in out.stderr


def test_serve_plan_runs_llama_server_with_the_slots_that_fit():
    """serve-plan launches llama-server with as many slots of --max-model-len as fit (here 4 of 128k beside the 8B's
    q4_k_m weights), so no replica runs more requests at once, as `latency` under a rate replays it."""
    d = run_json("serve-plan", "--model", "llama-3.1-8b", "--gpu", "h100", "--engine", "llamacpp", "--dtype", "q4_k_m",
                 "--max-model-len", "128k", "--request-rate", "2", "--prompt", "1000", "--output", "200",
                 "--tpot-target", "100ms")
    one = next(x for x in d["summary"]["layouts"] if x["tp"] == 1)
    latency = run_json(*LLAMACPP, "--request-rate", "2")
    assert any("at most 4 running requests, KV for 524,288 tokens" in n for n in latency["notes"])
    assert one["max_batch"] <= 4


def test_the_replays_pool_is_memorys_for_the_same_knobs():
    """--max-num-seqs and --max-num-batched-tokens size vLLM's profile run, so the pool: the replay holds what `memory`
    reports for the same flags (the README's promise), not the defaults' pool."""
    for knob, value in (("--max-num-seqs", "1024"), ("--max-num-batched-tokens", "64k")):
        replayed = _replayed(knob, value)["capacity"]
        memory = run_json("memory", "--mode", "infer", "--model", "llama-3.1-8b", "--gpu", "h100", "--seq", "2304",
                          knob, value)["summary"]["kv_cache_capacity"]
        assert replayed == memory != _replayed()["capacity"], (knob, replayed, memory)


def test_data_parallel_replicas_hold_no_all_reduce_buffers():
    """Two replicas of one GPU each serve on their own: no NCCL buffers, the single GPU's pool (the user audit found
    2 GiB charged to them); TP 2 sets up its all-reduce."""
    def pool(*layout: str) -> int:
        return run_json("memory", "--mode", "infer", "--model", "llama-3.1-8b", "--gpu", "h100", "--seq", "8192",
                        *layout)["summary"]["kv_cache_capacity"]

    assert pool("--gpus", "2", "--tp", "1") == pool("--gpus", "1")

    def non_torch(*layout: str) -> int:
        rows = run_json("memory", "--mode", "infer", "--model", "llama-3.1-8b", "--gpu", "h100", *layout)["rows"]
        return next(r["value"] for r in rows if r["name"] == "non_torch")

    assert non_torch("--gpus", "2") - non_torch("--gpus", "1") == round(1.75 * 2**30)  # NCCL_LINKED, NVLink peers
    experts = ("memory", "--mode", "infer", "--model", "mixtral-8x7b", "--gpu", "h100", "--gpus", "2", "--tp", "1")
    rows = {r["name"]: r["value"] for r in run_json(*experts, "--ep", "2")["rows"]}
    assert rows["non_torch"] >= 1.75 * 2**30  # experts split over the two: their all-to-all's buffers


def test_the_suggested_max_model_len_starts_and_one_more_token_does_not():
    """vLLM V0's profile run grows with max_model_len, so the pool measured at 128k is not the pool at the length it
    would suggest: the advice is searched (70B bf16 on two H100s: 12,640, where max-seq agrees), not read off 128k."""
    args = ("latency", "--model", "llama-3.1-70b", "--gpu", "h100", "--gpus", "2", "--prompt", "1k")
    note = next(n for n in run_json(*args, "--max-model-len", "128k")["notes"] if n.startswith("vLLM refuses"))
    longest = int(re.search(r"lower it to ([\d,]+)", note).group(1).replace(",", ""))
    assert run_json(*args, "--max-model-len", str(longest))["summary"]["feasible"]
    assert not run_json(*args, "--max-model-len", str(longest + 1))["summary"]["feasible"]
    assert longest == run_json("max-seq", "--mode", "infer", "--model", "llama-3.1-70b", "--gpu", "h100", "--gpus",
                               "2")["summary"]["max_seq"]


def test_max_batch_runs_sglang_and_trtllm_under_the_cap_latency_replays():
    """SGLang runs at most max_running_requests (1,024 on an 80 GB GPU), TensorRT-LLM max_batch_size (2,048): memory
    holds 4,000-odd 100-token requests of Llama 3.1 8B on an H100, but max-batch says what the replay runs."""
    for engine, cap in (("sglang", 1024), ("trtllm", 2048)):
        args = ("--model", "llama-3.1-8b", "--gpu", "h100", "--engine", engine, "--prompt", "50", "--output", "50")
        d = run_json("max-batch", *args)
        assert d["summary"]["max_batch"] == cap < d["summary"]["memory_max_batch"]
        replay = run_json("latency", *args, "--request-rate", "1000")
        assert any(f"at most {cap:,} running requests" in n for n in replay["notes"])
    d = run_json("max-batch", "--model", "llama-3.1-8b", "--gpu", "h100", "--engine", "sglang", "--prompt", "50",
                 "--output", "50", "--max-num-seqs", "8")
    assert d["summary"]["max_batch"] == 8


def test_launches_vllm_refuses_are_refused():
    """SchedulerConfig wants a token a step for each running request of a budget given; CacheConfig takes block
    sizes 1, 8, ... 256."""
    memory = ("memory", "--mode", "infer", "--model", "llama-3.1-8b", "--gpu", "h100", "--seq", "8192")
    for extra, why in ((("--max-num-batched-tokens", "16"), "is below max_num_seqs 256: vLLM refuses to start"),
                       (("--block-size", "7"), "--block-size 7 is not one vLLM takes")):
        out = run(*memory, *extra)
        assert out.exit_code == 2 and why in out.stderr, out.stderr
    # V1 lowers its default running-request cap to a smaller budget; searches over lengths run at any budget
    assert run(*memory, "--max-num-batched-tokens", "512", "--engine-version", "0.10.1").exit_code == 0
    assert run("max-seq", "--mode", "infer", "--model", "llama-3.1-8b", "--gpu", "h100", "--max-num-seqs",
               "4096").exit_code == 0


def test_more_requests_than_the_scheduler_runs_are_said_to_wait():
    d = run_json("memory", "--mode", "infer", "--model", "llama-3.1-8b", "--gpu", "h100", "--batch", "300", "--seq", "1k")
    assert d["summary"]["fits"] and any("the engine runs 256 at once (max_num_seqs); the rest wait" in n
                                        for n in d["notes"])


def test_past_32k_v0_chunks_its_prefill_so_longer_contexts_start_again():
    """V0 turns chunked prefill on past a 32k context, a smaller profile run and a larger pool: Llama 3.1 8B on a 24 GB
    RTX 4090 starts at 39,296 tokens though not at 30,000; the advice finds the longer one."""
    args = ("latency", "--model", "llama-3.1-8b", "--gpu", "rtx-4090", "--prompt", "1k")
    note = next(n for n in run_json(*args, "--max-model-len", "128k")["notes"] if n.startswith("vLLM refuses"))
    longest = int(re.search(r"lower it to ([\d,]+)", note).group(1).replace(",", ""))
    assert longest > 32768 and run_json(*args, "--max-model-len", str(longest))["summary"]["feasible"]
    assert not run_json(*args, "--max-model-len", str(longest + 1))["summary"]["feasible"]
    assert not run_json(*args, "--max-model-len", "30000")["summary"]["feasible"]


def test_llama_servers_filled_slots_fit_with_their_own_buffers():
    """Each llama-server slot adds a row of logits beside its cells: the slots that fill an H100 at 1,256-token contexts
    are searched with them, so the launch fits (one slot's pool divided by the context overshot it)."""
    d = run_json("latency", "--model", "llama-3.1-8b", "--gpu", "h100", "--engine", "llamacpp", "--request-rate", "2")
    assert d["summary"]["fits"] and d["summary"]["feasible"]


def test_max_batch_says_what_one_request_misses_when_no_batch_meets_the_targets():
    d = run_json("max-batch", "--model", "llama-3.1-8b", "--gpu", "h100", "--seq", "8192", "--ttft-target", "100ms",
                 "--tpot-target", "20ms")
    assert d["summary"]["max_batch"] == 0
    assert any(n.startswith("even one request misses the targets: TTFT") and "against 100 ms" in n for n in d["notes"])


def test_v0s_schedulers_per_pipeline_stage_are_said_as_counted():
    d = run_json("memory", "--mode", "infer", "--model", "llama-3.1-8b", "--gpu", "h100", "--gpus", "2", "--pp", "2")
    assert d["summary"]["max_num_seqs"] == 512
    assert any("max_num_seqs 256 a scheduler, one for each of the 2 pipeline stages (V0): 512 at once" in n
               for n in d["notes"])
