"""`serve-plan`: the fewest GPUs (or dollars) that serve a traffic within its latency targets.

For each GPU kind and tensor-parallel degree (1, 2, 4, 8: one node), the replica count is searched:
the traffic splits evenly over replicas (a Poisson stream split at random stays Poisson at rate/R;
C closed-loop clients become ceil(C/R) per replica), each replica is replayed by the scheduler
(schedule.py, with the KV capacity of the memory model and the step costs of serving.py), and the
fewest replicas whose mean TTFT and TPOT meet the targets is kept. More replicas never hurt, so the
search doubles, then bisects. A layout that cannot hold one request, or that misses a target even
with a single request in flight (no replica count can help), is rejected with its reason.
Cost: GPUs x --gpu-price per hour; per million output tokens, that over the output rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

from .breakdown import Breakdown, Quantity, Rows
from .traffic import Load
from .spec import ModelSpec, SpecError

TP_DEGREES = (1, 2, 4, 8)  # one node of 8 GPUs at most per replica


@dataclass(frozen=True)
class Traffic:
    """The requests (schedule.Load: its checks run before any layout is tried) and the targets, ``ttft`` and
    ``tpot`` in seconds."""

    load: Load
    ttft: float | None = None
    tpot: float | None = None

    def __post_init__(self) -> None:
        if self.ttft is None and self.tpot is None:
            raise SpecError("serve-plan needs a target: --ttft-target, --tpot-target or both")


class Tried(NamedTuple):
    """One layout's answer at its replica count."""

    gpu: str
    tp: int
    replicas: int
    ttft: float
    tpot: float
    tokens_per_s: float  # output tokens per second, all replicas
    mean_batch: float
    peak_batch: int
    meets: bool
    why: str  # what fails, or "" when it meets the targets


def plan(m: ModelSpec, gpus: list, traffic: Traffic, engine: str = "vllm", dtype: str = "bf16",
         kv_dtype: str | None = None, prices: dict[str, float] | None = None, max_gpus: int = 64,
         launch: Mapping[str, Any] | None = None) -> Breakdown:
    """Every GPU kind x TP degree: its fewest replicas meeting the targets, or why none does. ``launch``: the
    engine's settings as launched (throughput.ServeSettings: engine_version, gpu_util, max_model_len)."""
    prices, launch = prices or {}, dict(launch or {})
    if engine == "hf":
        raise SpecError("transformers generate does not batch continuously; plan for a serving engine "
                        "(--engine vllm, sglang, trtllm or llamacpp)")
    check_max_gpus(max_gpus)
    if launch.get("engine_version") is not None or launch.get("gpu_util") is not None:  # refused once, not per layout
        from .memory import MemorySettings

        MemorySettings(mode="infer", seq=traffic.load.prompt + traffic.load.output, engine=engine,
                       engine_version=launch.get("engine_version"), gpu_util=launch.get("gpu_util"))
    tried = [_layout(m, gpu, tp, traffic, engine, dtype, kv_dtype, max_gpus, launch) for gpu in gpus
             for tp in TP_DEGREES if tp <= max_gpus]
    good = sorted((t for t in tried if t.meets), key=lambda t: (_cost(t, prices), t.tp * t.replicas, t.ttft))
    bad = [t for t in tried if not t.meets]
    return _breakdown(m, gpus, traffic, engine, dtype, prices, good, bad, max_gpus, launch)


def check_max_gpus(max_gpus: int) -> None:
    if max_gpus < 1:
        raise SpecError(f"--max-gpus must be at least 1 (max_gpus={max_gpus})")


def _layout(m: ModelSpec, gpu, tp: int, traffic: Traffic, engine: str, dtype: str, kv_dtype: str | None,
            max_gpus: int, launch: dict) -> Tried:
    """The fewest replicas of ``tp`` GPUs meeting the targets (or the reason there are none)."""
    try:
        at = _replayer(m, gpu, tp, traffic, engine, dtype, kv_dtype, launch)
    except SpecError as exc:
        return Tried(gpu.name, tp, 0, 0.0, 0.0, 0.0, 0.0, 0, False, str(exc))
    most = max_gpus // tp
    lightest = at(most)  # the least load per replica this many GPUs allow
    if not lightest.meets:
        return lightest._replace(why=lightest.why + f" even at {most} replica(s) ({most * tp} GPUs)")
    low, high = 0, 1  # low fails (or is 0), high is the candidate
    while high < most and not at(high).meets:
        low, high = high, min(high * 2, most)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if at(mid).meets else (mid, high)
    return at(high)


def _replayer(m: ModelSpec, gpu, tp: int, traffic: Traffic, engine: str, dtype: str,
              kv_dtype: str | None, launch: dict) -> Callable[[int], Tried]:
    """A function of the replica count, replaying one replica's share of the traffic (memoized)."""
    from .expected_latency import replay, scheduler_limits, workload
    from .launch import filled_slots, kv_capacity, on_gpu, refuses_to_start
    from .traffic import per_instance
    from .serving import Efficiencies, resolve
    from .throughput import ServeSettings

    s = on_gpu(ServeSettings(prompt=traffic.load.prompt, output=traffic.load.output, tp=tp, dtype=dtype,
                             kv_dtype=kv_dtype, **launch), gpu, engine)
    capacity = kv_capacity(m, gpu, s, engine)  # refuses heads TP does not divide, weights that do not fit
    if capacity == 0:
        raise SpecError("memory: the weights and the engine's own buffers fill the GPU; no room for a KV cache")
    if capacity < traffic.load.prompt + traffic.load.output:
        raise SpecError(f"memory: KV room for {capacity:,} tokens, one request needs "
                        f"{traffic.load.prompt + traffic.load.output:,}")
    if refused := refuses_to_start(m, gpu, s, engine):
        raise SpecError(refused)
    r = resolve(Efficiencies(), engine, dtype, s.compute_dtype, gpu)
    budget, seqs = scheduler_limits(engine, gpu, s, None, None)
    if engine == "llamacpp":  # launched with as many slots of the context as fit: n_ctx = slots x the context
        seqs = filled_slots(m, gpu, s)
        capacity = seqs * s.context
        if not seqs:
            raise SpecError(f"memory: llama-server's one slot of {s.context:,} tokens does not fit beside the weights")
    w = workload(s, budget)
    seen: dict[int, Tried] = {}

    def at(replicas: int) -> Tried:
        if replicas not in seen:
            out = replay(m, gpu, w, r, per_instance(traffic.load, replicas), budget, seqs, capacity)
            why = "; ".join(filter(None, [_misses(out.ttft, out.itl, traffic), f"overloaded: {out.offered:g} req/s "
                                          f"arrive per replica, {out.saturated:.3g} complete saturated"
                                          if out.overloaded else ""]))
            seen[replicas] = Tried(gpu.name, tp, replicas, out.ttft, out.itl, out.output_tokens_per_s * replicas,
                                   out.mean_batch, out.peak_batch, not why, why)
        return seen[replicas]

    return at


def _misses(ttft: float, tpot: float, traffic: Traffic) -> str:
    from .units import fmt_seconds

    out = [f"{name} {fmt_seconds(value)} > {fmt_seconds(target)}" for name, value, target in
           (("TTFT", ttft, traffic.ttft), ("TPOT", tpot, traffic.tpot)) if target is not None and value > target]
    return "; ".join(out)


def _cost(t: Tried, prices: dict[str, float]) -> tuple[int, float]:
    """Dollars per hour where the GPU has a price, else the GPU count; unpriced after priced."""
    gpus = t.tp * t.replicas
    return (0, gpus * prices[t.gpu]) if t.gpu in prices else (1 if prices else 0, float(gpus))


def _record(t: Tried, prices: dict[str, float]) -> dict:
    gpus = t.tp * t.replicas
    out = {"gpu": t.gpu, "tp": t.tp, "pp": 1, "replicas": t.replicas, "gpus": gpus}
    if t.gpu in prices:
        per_hour = gpus * prices[t.gpu]
        out.update(usd_per_hour=per_hour, usd_per_mtok=per_hour / (t.tokens_per_s * 3600 / 1e6) if t.tokens_per_s else None)
    return out | {"ttft": t.ttft, "tpot": t.tpot, "tokens_per_s": t.tokens_per_s, "max_batch": t.peak_batch,
                  "mean_batch": round(t.mean_batch, 1), "meets": t.meets}


LAYOUT_UNITS = {"ttft": "s", "tpot": "s", "tokens_per_s": "token/s"}


def _breakdown(m: ModelSpec, gpus: list, traffic: Traffic, engine: str, dtype: str, prices: dict, good: list,
               bad: list, max_gpus: int, launch: dict) -> Breakdown:
    from .units import fmt_seconds

    rows = Rows("count", total=None)
    best = good[0] if good else None
    if best:
        rows.add("gpus", best.tp * best.replicas, f"{best.replicas} replica(s) of TP {best.tp} on {best.gpu}",
                 how=("{} replicas x {} TP", best.replicas, best.tp))
        rows.add("ttft", best.ttft, "mean, expected", unit="s", how=("by the scheduler replay of one replica",))
        rows.add("tpot", best.tpot, "mean, expected", unit="s", how=("by the scheduler replay of one replica",))
        rows.add("tokens_per_s", best.tokens_per_s, "output tokens, all replicas", unit="token/s",
                 how=("by the scheduler replay, x {} replicas", best.replicas))
    rate, clients = traffic.load.request_rate, traffic.load.concurrency
    load = f"{rate:g} request{'s' * (rate != 1)}/s" if rate else f"{clients} client{'s' * (clients != 1)}"
    targets = ", ".join(f"{n} <= {fmt_seconds(v)}" for n, v in (("TTFT", traffic.ttft), ("TPOT", traffic.tpot)) if v)
    notes = [f"{load} of {traffic.load.prompt:,} in / {traffic.load.output:,} out; {targets}; {engine}, {dtype}; "
             f"at most {max_gpus} GPUs; cheapest first ({'$ per hour' if prices else 'fewest GPUs'})",
             "each layout: the fewest replicas of TP GPUs whose replayed mean TTFT and TPOT meet the targets "
             "(the traffic split evenly; llmcalc/serveplan.py)"]
    notes += [f"rejected {t.gpu} TP {t.tp}: {t.why}" for t in bad]
    if not good:
        notes.append("no layout meets the targets within these GPUs")
    return Breakdown(command="serve-plan", title=f"Serving plan for {m.name}", model=m.name,
                     gpu=",".join(g.name for g in gpus), rows=rows.build(),
                     summary={"layouts": [_record(t, prices) for t in good],
                              "rejected": [{"gpu": t.gpu, "tp": t.tp, "why": t.why} for t in bad],
                              "meets": bool(good),
                              **({"gpus": Quantity(best.tp * best.replicas, "count")} if best else {})},
                     inputs={"prompt": traffic.load.prompt, "output": traffic.load.output, "request_rate": rate,
                             "concurrency": clients, "ttft_target": Quantity(traffic.ttft, "s"),
                             "tpot_target": Quantity(traffic.tpot, "s"), "engine": engine, "dtype": dtype,
                             "max_gpus": max_gpus, **{k: v for k, v in launch.items() if v is not None}},
                     notes=tuple(notes))


def gpu_prices(text: str | None, gpus: list) -> dict[str, float]:
    """--gpu-price: one number for every GPU, or gpu=price pairs by preset name or alias."""
    from .presets import load_gpu

    if not text:
        return {}
    try:
        if "=" not in text:
            return {g.name: _dollars(text) for g in gpus}
        pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
        prices = {load_gpu(name.strip()).name: _dollars(value) for name, value in pairs}
    except ValueError:
        raise SpecError(f"--gpu-price {text!r}: give dollars per GPU-hour above 0, 2.5 or h100=2.5,a100-80gb=1.6") \
            from None
    names = [g.name for g in gpus]
    stray = [name for name in prices if name not in names]
    unpriced = [name for name in names if name not in prices]
    if stray or unpriced:  # a ranking by dollars needs every kind priced, and a price for a kind not planned is a typo
        said = f"prices {', '.join(stray)}, which --gpu does not plan" if stray else f"has no price for {', '.join(unpriced)}"
        raise SpecError(f"--gpu-price {said}: give one price for each --gpu kind ({', '.join(names)}), or one number "
                        "for all")
    return prices


def _dollars(text: str) -> float:
    value = float(text)
    if not 0 < value < 1e6:
        raise ValueError(text)
    return value
