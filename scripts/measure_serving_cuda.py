"""Measure on a CUDA GPU what serving costs there, as test data for ``llmcalc latency`` and ``memory --mode infer``:

- ``hf``: transformers' own ``generate`` (eager, sdpa, DynamicCache) on randomly initialised Llama-shaped models,
  the ``--engine hf`` case: time to first token (generate with one new token), time per output token (the
  difference to 65 new tokens, over 64), the allocator's peak over the request, and the CUDA kernels and the
  host's time one decode step launches (torch.profiler);
- ``gemv``: the share of HBM bandwidth a decode step's weight reads reach when the host is out of the way: every
  linear layer of Llama-3.1-8B (its 16-bit weights, 15 GB) applied to M tokens, replayed from a CUDA graph, in
  bf16 and in FP8 (torch._scaled_mm, a scale per tensor); ``gemv_shapes``, each of its matrices alone;
- ``profile`` (only when named in ``--only``): one prefill forward's GPU time by kernel kind (GEMMs, attention,
  the rest: eager's pointwise kernels, llmcalc/eager.py) and one decode step's kernels, one request at 1k-16k;
- ``launch`` and ``copy``, always: what one small eager op costs the host (2000 adds), and a 4 GiB copy.

Not part of the test suite. Run on a machine with a GPU, torch and transformers:

    python scripts/measure_serving_cuda.py OUT.json

``--only=gemv,hf`` runs chosen sections, ``--models=llama-3.1-8b`` chosen models, ``--cases=48x8192`` chosen
(batch x prompt) cases of theirs, each with its decode step profiled; ``--dry`` runs tiny shapes on
the CPU to check the script. Times are medians of wall-clock timings after a synchronize (generate) or of CUDA
events (gemv), after warm-up. tests/data/gpu_serving.json keeps five runs merged by device (its note).
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time

import torch

from measure_kernels_cuda import write  # this folder's: rows one to a line, as tests/data keeps them

DRY = "--dry" in sys.argv
DEV = "cpu" if DRY else "cuda"
BF16 = torch.bfloat16

# The published configs' shapes (presets/models): Llama-3.2-1B and Llama-3.1-8B; weights are random.
LLAMA = {
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=128, vocab_size=128256, tie_word_embeddings=False),
}
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, vocab_size=256, tie_word_embeddings=False)
# (batch, prompt tokens) per model: one request at growing prompts, then batches at a 512-token prompt.
CASES = {"llama-3.2-1b": [(1, 128), (1, 1024), (1, 4096), (8, 512), (32, 512)],
         "llama-3.1-8b": [(1, 128), (1, 1024), (1, 4096), (1, 16384), (8, 512), (32, 512), (64, 2048)]}
NEW = 65  # new tokens in the timed generate; TPOT is over the last NEW - 1


def sync() -> None:
    if not DRY:
        torch.cuda.synchronize()


def wall(fn, reps: int = 3, warm: int = 1) -> float:
    """The median wall-clock seconds of ``fn()`` over ``reps`` runs, each closed by a synchronize."""
    for _ in range(warm):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def build(name: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = TINY if DRY else LLAMA[name]
    cfg = LlamaConfig(**shape, max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                      attn_implementation="sdpa")
    torch.manual_seed(0)
    torch.set_default_dtype(BF16)
    try:
        with torch.device(DEV):
            model = LlamaForCausalLM(cfg).eval()
    finally:
        torch.set_default_dtype(torch.float32)
    model.generation_config.eos_token_id = None  # random weights: never stop early
    model.generation_config.pad_token_id = 0
    return model


def decode_profile(model, prompt) -> dict:
    """The CUDA kernels and host time of one decode step at batch 1 (torch.profiler), after the prefill."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        out = model(prompt, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1:].argmax(-1)
        sync()
        acts = [ProfilerActivity.CPU] + ([] if DRY else [ProfilerActivity.CUDA])
        with profile(activities=acts) as prof:
            t = time.perf_counter()
            model(token, past_key_values=out.past_key_values, use_cache=True, logits_to_keep=1)
            host = time.perf_counter() - t
            sync()
    events = prof.key_averages()
    kernels = sum(e.count for e in events if getattr(e, "device_type", None) is not None
                  and str(e.device_type).endswith("CUDA") and e.device_time_total > 0)
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx",
                                                         "cudaLaunchKernelExC"))
    aten = sum(e.count for e in events if e.key.startswith("aten::"))
    busy = sum(e.device_time_total for e in events if str(getattr(e, "device_type", "")).endswith("CUDA")) / 1e6
    return {"kernels": kernels, "launch_calls": launches, "aten_ops": aten, "host_s_profiled": host, "gpu_s": busy}


KINDS = (("attention", ("flash", "fmha", "attention", "cudnn", "sdpa")),
         ("gemm", ("gemm", "cutlass", "xmma", "nvjet", "gemv", "splitk")))


def kernel_kind(name: str) -> str:
    """A CUDA kernel's kind by its name: attention, gemm, or other (elementwise, reductions, copies)."""
    low = name.lower()
    return next((kind for kind, marks in KINDS if any(m in low for m in marks)), "other")


def prefill_profile(model, ids) -> dict:
    """The GPU time of one prefill forward (logits at the last position only), summed by kernel kind, beside
    its wall-clock time: what an eager prefill spends on GEMMs, attention and its unfused other kernels."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        model(ids, use_cache=True, logits_to_keep=1)
        sync()
        acts = [ProfilerActivity.CPU] + ([] if DRY else [ProfilerActivity.CUDA])
        with profile(activities=acts) as prof:
            t = time.perf_counter()
            model(ids, use_cache=True, logits_to_keep=1)
            sync()
            seconds = time.perf_counter() - t
    kinds = {"gemm": 0.0, "attention": 0.0, "other": 0.0}
    counts = dict.fromkeys(kinds, 0)
    for e in prof.key_averages():
        if str(getattr(e, "device_type", "")).endswith("CUDA") and e.device_time_total > 0:
            kind = kernel_kind(e.key)
            kinds[kind] += e.device_time_total / 1e6
            counts[kind] += e.count
    return {"wall_s_profiled": seconds, "gpu_s": {k: round(v, 6) for k, v in kinds.items()}, "kernels": counts}


def hf_profiles(name: str) -> list[dict]:
    """prefill_profile at the prompts hf_cases times one request at."""
    model = build(name)
    rows = []
    for batch, prompt in ([(1, 16)] if DRY else [c for c in CASES[name] if c[0] == 1 and c[1] >= 1024]):
        ids = torch.randint(100, 200, (batch, prompt), device=DEV)
        rows.append({"model": name, "batch": batch, "prompt": prompt, **prefill_profile(model, ids),
                     "decode": decode_profile(model, ids)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def hf_cases(name: str) -> list[dict]:
    model = build(name)
    sync()
    weights = torch.cuda.memory_allocated() if not DRY else 0
    rows = []
    chosen = next(([tuple(map(int, c.split("x"))) for c in a.split("=", 1)[1].split(",")]
                   for a in sys.argv if a.startswith("--cases=")), None)
    cases = chosen or ([(1, 16), (2, 16)] if DRY else CASES[name])
    for batch, prompt in cases:
        ids = torch.randint(100, 1000 if not DRY else 200, (batch, prompt), device=DEV)
        mask = torch.ones_like(ids)

        def gen(new):
            with torch.no_grad():
                model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                               do_sample=False)

        reps = 2 if prompt * batch >= 16384 else 3
        first = wall(lambda: gen(1), reps=reps)
        if not DRY:
            torch.cuda.reset_peak_memory_stats()
        whole = wall(lambda: gen(NEW), reps=reps)
        peak = torch.cuda.max_memory_allocated() - weights if not DRY else 0
        row = {"model": name, "batch": batch, "prompt": prompt, "new_tokens": NEW, "ttft_s": first,
               "tpot_s": (whole - first) / (NEW - 1), "e2e_s": whole, "weights_bytes": weights,
               "peak_over_weights_bytes": peak}
        if chosen or (batch == 1 and prompt in (128, 16)):
            row.update(decode_profile(model, ids))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def each_model(section, models) -> list[dict]:
    """``section(name)``'s rows for each model, the memory of one given back before the next is built."""
    rows = []
    for name in models:
        rows += section(name)
        if not DRY:
            torch.cuda.empty_cache()
    return rows


def gemv() -> list[dict]:
    """Every linear of Llama-3.1-8B (32 layers of q, k, v, o, gate, up, down, then the LM head) applied to M
    tokens, replayed from one CUDA graph: the weight bytes over the time give decode's HBM share."""
    shape = TINY if DRY else LLAMA["llama-3.1-8b"]
    h, f, hd = shape["hidden_size"], shape["intermediate_size"], shape["head_dim"]
    q, kv = shape["num_attention_heads"] * hd, shape["num_key_value_heads"] * hd
    layer = [(q, h), (kv, h), (kv, h), (h, q), (f, h), (f, h), (h, f)]
    mats = layer * shape["num_hidden_layers"] + [(shape["vocab_size"], h)]
    rows = []
    for dtype in ("bf16", "fp8"):
        if dtype == "fp8" and (DRY or torch.cuda.get_device_capability() < (8, 9)):
            continue
        weights = []
        for out_f, in_f in mats:
            w = torch.randn(out_f, in_f, device=DEV, dtype=BF16)
            weights.append(w if dtype == "bf16" else w.to(torch.float8_e4m3fn))
            del w
        nbytes = sum(w.numel() * w.element_size() for w in weights)
        one = torch.ones((), device=DEV, dtype=torch.float32)
        for m in ((1, 8, 16, 64) if dtype == "bf16" else (16, 64)):
            xs = {in_f: torch.randn(m, in_f, device=DEV, dtype=BF16) for _, in_f in mats}
            if dtype == "fp8":
                xs = {k: v.to(torch.float8_e4m3fn) for k, v in xs.items()}

                def step():
                    for w in weights:
                        torch._scaled_mm(xs[w.shape[1]], w.t(), scale_a=one, scale_b=one, out_dtype=BF16)
            else:
                def step():
                    for w in weights:
                        xs[w.shape[1]] @ w.t()
            seconds = graph_time(step)
            row = {"weights": dtype, "tokens": m, "weight_bytes": nbytes, "seconds": seconds,
                   "bytes_per_s": nbytes / seconds if seconds else None}
            rows.append(row)
            print(json.dumps(row), flush=True)
        weights.clear()  # free them before the next dtype's (the step closures hold the list)
        if not DRY:
            torch.cuda.empty_cache()
    return rows


def gemv_shapes() -> list[dict]:
    """Each distinct linear of Llama-3.1-8B alone at one token (bf16): enough copies of it to hold 2 GB, so no
    read comes from L2, replayed from one CUDA graph. Small matrices show what a kernel's fixed cost takes."""
    shape = TINY if DRY else LLAMA["llama-3.1-8b"]
    h, f, hd = shape["hidden_size"], shape["intermediate_size"], shape["head_dim"]
    q, kv = shape["num_attention_heads"] * hd, shape["num_key_value_heads"] * hd
    rows = []
    for name, (out_f, in_f) in {"q": (q, h), "kv": (kv, h), "o": (h, q), "gate": (f, h), "down": (h, f),
                                "head": (shape["vocab_size"], h)}.items():
        size = out_f * in_f * 2
        copies = max(2, -(-2 * 10**9 // size)) if not DRY else 2
        weights = [torch.randn(out_f, in_f, device=DEV, dtype=BF16) for _ in range(copies)]
        x = torch.randn(1, in_f, device=DEV, dtype=BF16)

        def step():
            for w in weights:
                x @ w.t()
        seconds = graph_time(step)
        rows.append({"matrix": name, "shape": [out_f, in_f], "copies": copies, "bytes": size * copies,
                     "seconds": seconds, "bytes_per_s": size * copies / seconds if seconds else None})
        print(json.dumps(rows[-1]), flush=True)
        weights.clear()
    return rows


def graph_time(step) -> float:
    """The median seconds of ``step`` replayed from a CUDA graph (CUDA events), after warm-up; 0 when dry."""
    step()
    if DRY:
        return 0.0
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    for _ in range(3):
        graph.replay()
    times = []
    for _ in range(10):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    del graph
    return statistics.median(times)


def copy_bandwidth() -> dict:
    """A device-to-device copy of 4 GiB, counting bytes read and written."""
    if DRY:
        return {}
    a = torch.empty(2**31, device=DEV, dtype=torch.uint8)
    b = torch.empty_like(a)
    b.copy_(a)
    seconds = wall(lambda: b.copy_(a), reps=10)
    return {"bytes": 2 * 2**31, "seconds": seconds}


def launches() -> dict:
    """What one small eager op costs the host: a chain of 2000 adds on a tiny tensor."""
    x = torch.zeros(16, device=DEV)

    def chain():
        for _ in range(2000):
            x.add_(1)

    return {"ops": 2000, "seconds": wall(chain, reps=5)}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def main() -> None:
    import transformers

    out = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else None
    only = next((a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--only=")), None)
    start = time.perf_counter()
    info = {"script": "scripts/measure_serving_cuda.py", "date": time.strftime("%Y-%m-%d"),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "device": "cpu" if DRY else torch.cuda.get_device_name(), "cpu": cpu_name()}
    info["launch"] = launches()
    info["copy"] = copy_bandwidth()
    if only is None or "gemv" in only:
        info["gemv"] = gemv()
    if only is None or "gemv_shapes" in only:
        info["gemv_shapes"] = gemv_shapes()
    if only is None or "hf" in only:
        models = next((a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--models=")), LLAMA)
        info["hf"] = each_model(hf_cases, models)
    if only is not None and "profile" in only:
        models = next((a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--models=")), LLAMA)
        info["prefill_profile"] = each_model(hf_profiles, models)
    info["seconds"] = round(time.perf_counter() - start, 1)
    if out:
        write(out, info)
    else:
        print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
