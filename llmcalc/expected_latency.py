"""`latency`: the expected times an engine shows, with a band, beside the roofline bound.

The bound (throughput.latency_breakdown) stays a firm "no": a target below it cannot be met on
this hardware. The expected values (serving.py) answer "and above it, will I get it?": one request
at a time, or ``batch`` prompts arriving together, by the step-cost model; under load
(``--concurrency``, ``--request-rate``) by replaying the engine's scheduler (schedule.py).
"""

from __future__ import annotations

import dataclasses

from .breakdown import Breakdown, Quantity, Rows
from .dtypes import DTYPE_BYTES, activation_dtype
from .eager import ELEMENTWISE_BANDWIDTH
from .launch import UNCAPPED, launch_slots, on_gpu, pool, refuses_to_start
from .memory.engines import RUNNING_CAP
from .schedule import SATURATION, simulate
from .traffic import Load, per_instance
from .serving import BAND, CONCAT_CACHE, Efficiencies, Resolved, Workload, expected, peak, resolve, step_costs
from .spec import ModelSpec, SpecError
from .throughput import ServeSettings, latency_breakdown
from .units import fmt_count, fmt_seconds

# The token budget per step (max_num_batched_tokens) and the running-request cap (max_num_seqs) an
# engine starts with, where the memory model does not choose them (vLLM: memory/engines/vllm.defaults):
# SGLang's chunked_prefill_size and max_running_requests on an 80 GB GPU (server_args, 0.5), TensorRT-LLM's
# max_num_tokens and max_batch_size (LLM API defaults), llama.cpp's n_batch and one slot per request.
SCHEDULER = {"sglang": (8192, RUNNING_CAP["sglang"]), "trtllm": (8192, RUNNING_CAP["trtllm"]), "llamacpp": (2048, None)}


def scheduler_limits(engine: str, gpu, s: ServeSettings, chunk: int | None, max_seqs: int | None) -> tuple[int, int]:
    """(tokens per step, running requests at most) for this engine, the options first."""
    if max_seqs is not None and max_seqs < 1:
        raise SpecError(f"--max-num-seqs must be at least 1, got {max_seqs}")
    if engine == "hf":
        return UNCAPPED, UNCAPPED  # generate: the whole batch's prompts in one step, no scheduler to bound them
    if engine == "vllm":
        from .memory.engines import parse_version
        from .memory.engines.vllm import defaults
        from .memory.per_gpu import device
        from .memory.settings import MemorySettings

        ms = MemorySettings(mode="infer", seq=s.context, engine="vllm", prefill_chunk=chunk, max_num_seqs=max_seqs,
                            engine_version=s.engine_version)  # the release resolved: the default, or the one asked
        return defaults(ms, device(gpu, gpu.usable_bytes), parse_version(ms.engine_version))
    budget, seqs = SCHEDULER[engine]
    return chunk or budget, max_seqs or seqs or UNCAPPED


def latency_estimate(m: ModelSpec, gpu, s: ServeSettings, engine: str = "vllm", eff: Efficiencies = Efficiencies(),
                     load: Load | None = None, chunk: int | None = None, max_seqs: int | None = None,
                     ttft_target: float | None = None, tpot_target: float | None = None,
                     measured: tuple[float | None, float | None] = (None, None),
                     measured_at: tuple[ServeSettings, Load | None, str] | None = None) -> Breakdown:
    """Expected TTFT, TPOT and e2e with their band, then the bound's rows (throughput.latency_breakdown).
    ``measured`` (TTFT, ITL) calibrates the efficiencies first (calibrate.py): measured at these settings,
    or at ``measured_at`` (the settings and load a benchmark ran, and where it comes from)."""
    from .memory.engines import check_engine_gpu

    s = on_gpu(s, gpu, engine)
    r = resolve(eff, engine, s.dtype, s.compute_dtype, gpu)  # an unknown engine or setting: refused before any work
    s, chunk, max_seqs = _with_knobs(s, chunk, max_seqs)
    check_engine_gpu(engine, gpu, s.dtype)
    one_client = engine == "hf" and load is not None and load.concurrency == 1
    if one_client and s.batch > 1:
        raise SpecError("--batch is a batch arriving together; with --concurrency or --request-rate leave it at 1")
    if one_client:
        load = None  # one client calling generate in a loop: one request at a time, which generate does
    budget, seqs = scheduler_limits(engine, gpu, s, chunk, max_seqs)
    bound = latency_breakdown(m, gpu, s, ttft_target, tpot_target, engine, launch_slots(m, gpu, s, engine, load, seqs))
    w = workload(s, budget)
    fitted: tuple[str, ...] = ()
    if any(value is not None for value in measured):
        at_s, at_load, source = measured_at or (s, load, "")
        at_s = _with_knobs(at_s, chunk, max_seqs)[0]
        at_budget, at_seqs = (budget, seqs) if measured_at is None else scheduler_limits(engine, gpu, at_s, chunk, max_seqs)
        eff, fitted = _calibrated(m, gpu, at_s, engine, eff, workload(at_s, at_budget), at_load, at_budget, at_seqs,
                                  measured)
        fitted = tuple(f"{note} ({source})" if source else note for note in fitted)
        r = resolve(eff, engine, s.dtype, s.compute_dtype, gpu)
    rows = Rows("s", total=None)
    capacity, unreplayed = 0, ""
    if load is not None and engine != "hf":
        capacity, seqs = pool(m, gpu, s, engine, load, seqs)
        if capacity < s.prompt + s.output:  # not one request's KV: nothing to replay; the bound says why
            unreplayed, load = (f"{_load_text(load)}: not replayed, as not one request of {s.prompt + s.output:,} "
                                f"tokens fits the KV cache ({capacity:,} tokens)"), None
    if load is None:
        times = _one_at_a_time(rows, m, gpu, w, r)
        load_notes = [unreplayed or _alone_note(w, budget, one_client)]
    else:
        times = _under_load(rows, m, gpu, w, r, load, budget, seqs, s, capacity)
        load_notes = [f"{_load_text(load)}: the scheduler replayed step by step (llmcalc/schedule.py), {budget:,} tokens "
                      f"per step, at most {seqs:,} running requests, KV for {capacity:,} tokens"]
    _bound_rows(rows, bound, s.output)
    if engine == "hf" and s.tp > 1:
        load_notes.append(f"TP {s.tp} as transformers runs it with tp_plan='auto' under torchrun; device_map='auto' "
                          "instead runs the layers one GPU after another, no faster than one GPU")
    if fitted:
        load_notes += [f"calibrated: {'; '.join(fitted)}; give the same options to predict other settings on this "
                       "hardware"]
    return _result(m, gpu, s, engine, r, bound, rows, times, load, load_notes, (ttft_target, tpot_target),
                   refuses_to_start(m, gpu, s, engine))


def _with_knobs(s: ServeSettings, chunk: int | None, max_seqs: int | None) -> tuple[ServeSettings, int | None, int | None]:
    """The engine's knobs, given as arguments or as ServeSettings' fields, in both: the scheduler reads the one, the
    pool (`memory` sizes it with them) the other."""
    chunk = s.prefill_chunk if chunk is None else chunk
    max_seqs = s.max_num_seqs if max_seqs is None else max_seqs
    return dataclasses.replace(s, max_num_seqs=max_seqs, prefill_chunk=chunk), chunk, max_seqs


def workload(s: ServeSettings, budget: int) -> Workload:
    """What one instance of ``s`` runs (serving.Workload), prompts chunked at ``budget`` tokens per step."""
    return Workload(requests=-(-s.batch // s.dp), prompt=s.prompt, output=s.output, tp=s.tp, dtype=s.dtype,
                    compute_dtype=s.compute_dtype, kv_dtype=s.cache_dtype,
                    act_bytes=DTYPE_BYTES[activation_dtype(s.dtype)], attention=s.attention, chunk=budget)


def _calibrated(m: ModelSpec, gpu, s: ServeSettings, engine: str, eff: Efficiencies, w: Workload, load: Load | None,
                budget: int, seqs: int, measured: tuple) -> tuple[Efficiencies, tuple[str, ...]]:
    """The efficiencies that reproduce the measured (TTFT, ITL) at these settings (calibrate.fit)."""
    from .calibrate import fit

    capacity, seqs = pool(m, gpu, s, engine, load, seqs) if load is not None else (0, seqs)
    share = per_instance(load, s.dp) if load is not None else None

    def times(e: Efficiencies) -> tuple[float, float]:
        r = resolve(e, engine, s.dtype, s.compute_dtype, gpu)
        if share is None:
            x = expected(m, gpu, w, r)
            return x.ttft, x.tpot
        served = replay(m, gpu, w, r, share, budget, seqs, capacity)
        return served.ttft, served.itl

    result = fit(times, eff, *measured)
    return result.eff, result.notes


def _one_at_a_time(rows: Rows, m: ModelSpec, gpu, w: Workload, r: Resolved) -> dict:
    x = expected(m, gpu, w, r)
    share = x.waited
    last = r.request_overhead + x.prefill.total  # the last request's first token: every prompt prefilled
    prefill, *parts = _step_formula("prefill", x.prefill.eager)
    _band_rows(rows, "ttft", x.ttft, (f"request_overhead + ({prefill})" + (" x {}" if share < 1 else ""), *parts, share))
    together = share < 1 or w.requests > 1  # a batch: its last first token (the mean's, when one step prefills all)
    if together:
        rows.add("ttft_last", last, "the last request's: every prompt prefilled",
                 how=(f"request_overhead + {prefill}", *parts))
    rows.add("request_overhead", r.request_overhead, "generate's setup (cache, logits processors): once per call"
             if r.engine == "hf" else "HTTP server, tokenizer, scheduler: once per request",
             how=("{} s", r.request_overhead))
    for phase, step in (("prefill", x.prefill), ("decode", x.decode)):
        rows.add(f"expected/{phase}_compute", step.compute, f"at {r.compute:.0%} of the dense peak",
                 how=("{} FLOP / ({} GPUs x {} FLOP/s x {})", step.flops, w.tp, peak(gpu, w, r), r.compute))
        rows.add(f"expected/{phase}_memory", step.memory,
                 f"weights and KV per GPU at {r.bandwidth:.0%} of HBM bandwidth",
                 how=("{} B / ({} B/s x {})", step.nbytes, gpu.memory_bandwidth, r.bandwidth))
        if step.eager:
            copy = ", the cache's copy by torch.cat" if phase == "decode" and r.engine in CONCAT_CACHE else ""
            rows.add(f"expected/{phase}_unfused", step.unfused,
                     f"eager pointwise kernels{copy} at {ELEMENTWISE_BANDWIDTH:.0%} of HBM bandwidth",
                     how=("{} B / ({} B/s x {})", step.unfused_bytes, gpu.memory_bandwidth, ELEMENTWISE_BANDWIDTH))
        steps, per_layer = (x.chunks, r.prefill_overhead) if phase == "prefill" else (1, r.layer_overhead)
        rows.add(f"expected/{phase}_overhead", step.overhead,
                 f"{fmt_count(steps, 'step')} x {m.num_hidden_layers} layers",
                 how=("{} steps x {} layers x {} s", steps, m.num_hidden_layers, per_layer))
        rows.add(f"expected/{phase}_communication", step.communication, "TP all-reduces: latency + bytes",
                 how=("by 2 all-reduces per layer per step (llmcalc/serving.py)",) if step.communication else ("0",))
        if phase == "prefill":
            _band_rows(rows, "tpot", x.tpot, _step_formula("decode", x.decode.eager))
    rows.add("e2e", x.e2e, f"ttft + {max(w.output - 1, 0)} decode steps", how=("ttft + tpot x {}", max(w.output - 1, 0)))
    if together:  # beside e2e_bound, which is the last request's too
        rows.add("e2e_last", last + x.tpot * max(w.output - 1, 0), "the last request's",
                 how=("ttft_last + tpot x {}", max(w.output - 1, 0)))
    rows.add("decode_tokens_per_s", w.requests / x.tpot, unit="token/s", note="per instance, while decoding",
             how=("{} requests / tpot", w.requests))
    return {"ttft": x.ttft, "tpot": x.tpot, "e2e": x.e2e,
            **({"ttft_last": last} if together else {})}


def _step_formula(phase: str, eager: bool) -> tuple[str, ...]:
    """A step's time from its rows (serving.Step.total): the host's overhead after the GPU's work, or beside it
    where the engine launches eagerly."""
    names = [f"expected/{phase}_{part}" for part in ("compute", "memory", "communication", "overhead")]
    if eager:
        return "max(max({}, {}) + {} + {}, {})", *names[:2], f"expected/{phase}_unfused", *names[2:]
    return ("max({}, {}) + {} + {}", *names[:2], *names[3:], names[2])


def replay(m: ModelSpec, gpu, w: Workload, r: Resolved, load: Load, budget: int, seqs: int, capacity: int):
    """schedule.simulate for this instance, the request overhead added to TTFT and e2e."""
    if r.engine == "hf":
        raise SpecError("transformers generate does not batch continuously: --concurrency and --request-rate need a "
                        "serving engine (--engine vllm, sglang, trtllm or llamacpp)")
    if capacity == 0:
        raise SpecError(f"{m.name} does not fit on {w.tp} x {gpu.name} with room for a KV cache "
                        "(see `llmcalc memory --mode infer`)")
    served = simulate(step_costs(m, gpu, w, r), load, budget, seqs, capacity)
    return served._replace(ttft=served.ttft + r.request_overhead, e2e=served.e2e + r.request_overhead)


def _under_load(rows: Rows, m: ModelSpec, gpu, w: Workload, r: Resolved, load: Load, budget: int, seqs: int,
                s: ServeSettings, capacity: int) -> dict:
    if w.requests > 1:
        raise SpecError("--batch is a batch arriving together; with --concurrency or --request-rate leave it at 1")
    served = replay(m, gpu, w, r, per_instance(load, s.dp), budget, seqs, capacity)
    how = ("by the scheduler replay: the mean over {} requests between the warm-up and the wind-down "
           "(llmcalc/schedule.py)", served.requests)
    _band_rows(rows, "ttft", served.ttft, ("by the scheduler replay: the mean over {} requests between the warm-up and "
                                           "the wind-down, with {} s of request overhead", served.requests,
                                           r.request_overhead))
    rows.add("queue_wait", served.queued, "mean wait for admission (KV cache or max_num_seqs full)", how=how)
    _band_rows(rows, "tpot", served.itl, how)
    rows.add("e2e", served.e2e, "mean end-to-end latency", how=how)
    rows.add("output_tokens_per_s", served.output_tokens_per_s, unit="token/s", note="per instance", how=how)
    rows.add("tokens_per_s_per_gpu", served.output_tokens_per_s / s.tp, unit="token/s", note="output tokens",
             how=("output_tokens_per_s / {} GPUs", s.tp))
    rows.add("requests_per_s", served.requests_per_s, unit="count", note="per instance, completed", how=how)
    steps = ("by the scheduler replay: over its {} steps", served.steps)
    rows.add("mean_batch", served.mean_batch, unit="count", note="running requests per step", how=steps)
    rows.add("max_batch", served.peak_batch, unit="count", note="running requests in the fullest step", how=steps)
    return {"ttft": served.ttft, "tpot": served.itl, "e2e": served.e2e, "overloaded": served.overloaded,
            "output_tokens_per_s": served.output_tokens_per_s, "requests_per_s": served.requests_per_s,
            "offered": served.offered, "saturated": served.saturated}


def _band_rows(rows: Rows, name: str, value: float, how: tuple) -> None:
    rows.add(name, value, "expected", how=how)
    rows.add(f"{name}_low", value * BAND[0], "band: measured / expected, 10th percentile", how=("{} x {}", name, BAND[0]))
    rows.add(f"{name}_high", value * BAND[1], "band: measured / expected, 90th percentile", how=("{} x {}", name, BAND[1]))


def _bound_rows(rows: Rows, bound: Breakdown, output: int) -> None:
    """The roofline rows: ttft and tpot renamed ttft_bound and tpot_bound, their parts as they are."""
    renamed = {"ttft": "ttft_bound", "tpot": "tpot_bound", "e2e": "e2e_bound"}
    batched = bound.inputs["batch"] > bound.inputs["dp"]  # its prompts all prefilled before the first tokens
    for row in bound.rows:
        if row.name == "decode_tokens_per_s":
            continue
        how = tuple(renamed.get(t, t) if isinstance(t, str) else t for t in row.how)
        if row.name == "e2e":
            how = ("ttft_bound + tpot_bound x {}", max(output - 1, 0))
        note = "lower bound" + (", the last request's" if batched and row.name in ("ttft", "e2e") else "")
        rows.add(renamed.get(row.name, row.name), row.value, note if row.name in renamed else row.note,
                 how=how)


def _load_text(load: Load) -> str:
    return f"{load.concurrency} concurrent clients (closed loop)" if load.concurrency is not None else \
        f"{load.request_rate:g} requests/s (Poisson arrivals)"


def _result(m: ModelSpec, gpu, s: ServeSettings, engine: str, r: Resolved, bound: Breakdown, rows: Rows, times: dict,
            load: Load | None, load_notes: list[str], targets: tuple, refused: str = "") -> Breakdown:
    overloaded, offered, most = times.pop("overloaded", False), times.pop("offered", 0.0), times.pop("saturated", 0.0)
    summary = {key: Quantity(value, "token/s" if "tokens" in key else "count" if key == "requests_per_s" else "s")
               for key, value in times.items()}
    notes = (_misfit_first(bound.notes) + _load_notes(m, r, load, overloaded, (offered, most)) + list(load_notes)
             + _split_note(engine, s.tp))
    if load is not None:
        summary["overloaded"] = overloaded
    for key in ("ttft", "tpot"):
        summary[f"{key}_low"], summary[f"{key}_high"] = (Quantity(times[key] * BAND[0], "s"),
                                                           Quantity(times[key] * BAND[1], "s"))
    for key in ("ttft", "tpot", "e2e"):
        summary[f"{key}_bound"] = bound.summary.quantity(key)
    notes += _target_notes(summary, times, bound, targets, load is not None)
    _bound_summary(summary, bound, overloaded)
    if refused:  # the engine does not start: nothing is served, whatever the times
        summary.update(fits=False, feasible=False)
        notes.insert(0, refused)
    summary.update(_meets(summary, targets))
    sources = ", ".join(f"{k.replace('_', ' ')} {_shown(k, getattr(r, k))} ({why})" for k, why in r.sources.items())
    # The MoE caveat's run: sgl-project/sglang PR 2643 (v0.4.1.post2), DeepSeek-V3 TP8, batch 1, 128 in / 256 out:
    # 30.29 tokens/s; serving_measured.yaml holds no MoE run to fit against.
    notes.append(f"expected ({engine}): {sources}; band {BAND[0]:g}-{BAND[1]:g}x, the spread of measured / expected "
                 "over published runs (tests/data/serving_measured.yaml)" + (
                     "; transformers' own generate on an H100 and an H200 falls inside it 24 times in 25 "
                     "(tests/data/gpu_serving.json)" if engine == "hf" else "") + (
                     "; those are all dense models: for an MoE model the band is not checked (a public SGLang 0.4.1 "
                     "run of DeepSeek-V3 on 8 H200s decoded one request at 30 tokens/s, slower than this model "
                     "expects)" if m.is_moe else ""))
    notes += [n for n in bound.notes if not n.startswith(("efficiency", "does not fit"))]
    notes.append(f"bound: {bound.notes[1]}" if len(bound.notes) > 1 else "")
    return Breakdown(command="latency", title=f"Latency of {m.name} on {s.tp * s.dp} x {gpu.name}, {engine}",
                     model=m.name, gpu=gpu.name, rows=rows.build(), summary=summary,
                     inputs={**bound.inputs, "engine": engine,
                             "concurrency": load.concurrency if load else None,
                             "request_rate": load.request_rate if load else None},
                     notes=tuple(n for n in notes if n))


def _bound_summary(summary: dict, bound: Breakdown, overloaded: bool) -> None:
    """The bound's verdicts into the summary; an overloaded server (its queue growing without bound) is not
    feasible, whatever its times."""
    for key in ("prefill_bound", "decode_bound", "requests_per_instance", "fits", "memory_total", "usable",
                "ttft_met", "tpot_met", "feasible"):
        if key in bound.summary:
            summary[key] = bound.summary.quantity(key)
    if overloaded:
        summary["feasible"] = False


def _meets(summary: dict, targets: tuple) -> dict:
    """With a target: ``meets``, what --check and serve-plan judge: feasible (it fits, the bound meets the targets, a
    replay is not overloaded) and each expected time meets its target. ``feasible`` alone says only whether a target
    is reachable at all."""
    if all(t is None for t in targets):
        return {}
    expected = all(summary.get(f"{key}_expected_met") is not False for key in ("ttft", "tpot"))
    return {"meets": bool(summary.get("feasible", True)) and expected}


def _alone_note(w: Workload, budget: int, one_client: bool) -> str:
    """How requests without a load run: one at a time, or --batch together."""
    if one_client:
        return "--concurrency 1: one client calling generate in a loop, one request at a time"
    steps = "one step" if budget >= w.requests * w.prompt else f"{budget:,}-token steps"
    if w.requests == 1:
        return (f"one request per instance: its prompt prefills in {steps}, then it decodes; --batch N for N arriving "
                "together, --concurrency or --request-rate for a server under load")
    return (f"{w.requests:,} requests per instance arriving together (--batch): their prompts prefill in {steps}, then "
            "they decode together; --concurrency or --request-rate for a server under load")


def _misfit_first(notes: tuple) -> list[str]:
    """The bound's "does not fit", which goes first, as a refusal does: it is the answer."""
    return [n for n in notes if n.startswith("does not fit")]


def _split_note(engine: str, tp: int) -> list[str]:
    """llama.cpp over several GPUs: ggml's split modes, layer (its default) or row (llama-server --split-mode)."""
    if engine != "llamacpp" or tp == 1:
        return []
    return [f"llama.cpp over {tp} GPUs times tensor parallelism, its --split-mode row; its default, --split-mode "
            "layer, runs a token through one GPU after another, no faster than one GPU"]


def _load_notes(m: ModelSpec, r: Resolved, load: Load | None, overloaded: bool, rates: tuple[float, float]) -> list[str]:
    """What a replay under load needs said: that it is overloaded, and what it does not model. ``rates``: the
    offered and the saturated requests per second of an instance (open loop)."""
    if load is None:
        return []
    notes, (offered, most) = [], rates
    if overloaded:
        where = "past" if offered > most else f"within {1 - SATURATION:.0%} of"
        notes.append("overloaded: " + (f"{offered:g} requests/s arrive per instance, {where} the {most:.3g} it "
                                       "completes never short of work; " if offered else
                                       "the replay was cut before every request ended; ")
                     + "the queue grows without bound, so these means grow with the run's length: add GPUs or lower "
                     "the load (`serve-plan` finds how many)")
    if r.engine == "llamacpp":
        notes.append("llama.cpp: one server slot (llama-server -np) per client unless --max-num-seqs" if load.concurrency
                     else "llama.cpp: as many server slots (llama-server -np) as contexts fit unless --max-num-seqs")
    if m.window_layers:
        notes.append("under load every layer is costed and cached at full attention: sliding windows are not credited")
    return notes


def _target_notes(summary: dict, times: dict, bound: Breakdown, targets: tuple, loaded: bool) -> list[str]:
    """Each target against the expected value (summary *_expected_met), and a note where only the bound meets it."""
    notes = []
    for (key, target) in zip(("ttft", "tpot"), targets):
        if target is None:
            continue
        # a batch arriving together: the target holds for every request, so for the last first token, as the bound
        # (every prompt prefilled) does
        expected = times.get(f"{key}_last", times[key])
        summary[f"{key}_target"] = Quantity(target, "s")
        summary[f"{key}_expected_met"] = expected <= target
        if f"{key}_last" in times:
            notes.append(f"{key} target {fmt_seconds(target)} held to the batch's last first token (expected "
                         f"{fmt_seconds(expected)}, bound {fmt_seconds(bound.summary[key])}), every prompt prefilled")
        if bound.summary[key] <= target < expected:
            notes.append(f"{key} target {fmt_seconds(target)} is above the {fmt_seconds(bound.summary[key])} bound "
                         f"but below the expected {fmt_seconds(expected)}: "
                         + ("less load per replica (more GPUs) or a faster engine" if loaded
                            else "possible only with a faster engine"))
    return notes


def _shown(key: str, value: float) -> str:
    if key.endswith("overhead"):
        return fmt_seconds(value)
    return f"{value:.0%}"
