"""Calibration from one measurement: fit the expected model's efficiencies to a measured TTFT and
inter-token latency on this hardware, so other settings (prompt lengths, loads) are predicted from
what this GPU and engine actually reached rather than from the published defaults.

What is fitted, and why that one: decode time per token is mostly the weights and KV cache read, so
a measured ITL fixes the share of HBM bandwidth decode reaches (the per-layer step cost kept at its
default); where that share would exceed 1, the step cost is what is off, and it is fitted instead
(down to zero). A measured TTFT then fixes the share of peak compute prefill reaches; where prefill
is not compute-bound (a short prompt) the TTFT fixes the per-request overhead instead. Each fit is a
bisection on a quantity the expected time falls with monotonically. Fitted values stay physical
(fractions of peak in (0, 1], overheads >= 0); a measurement faster than that allows is refused.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, NamedTuple

from .serving import Efficiencies
from .spec import SpecError

# The lowest efficiency a fit may return: about half the lowest any published run reached (prefill 0.39,
# TensorRT-LLM 0.5 fp8; decode 0.50, gpt-fast int4). Slower than that, the time is overhead, not the GPU.
PLAUSIBLE = {"compute": 0.2, "bandwidth": 0.3}
OVERHEAD_MAX = 9.99  # seconds: the most an overhead option takes (serving.Efficiencies)
ROUNDS = 4  # alternate fits at most (they agree within 0.5% in two or three under load, at once alone)


class Fitted(NamedTuple):
    eff: Efficiencies  # the efficiencies to predict with
    notes: tuple[str, ...]  # what was fitted from what


def fit(times: Callable[[Efficiencies], tuple[float, float]], given: Efficiencies, ttft: float | None,
        itl: float | None) -> Fitted:
    """Efficiencies that reproduce the measured ``ttft`` and ``itl`` (either may be None) with ``times``,
    the expected (TTFT, TPOT) of given efficiencies at the measured settings. Only the fitted fields are
    set beyond what was ``given``, so the options the notes print reproduce the fit exactly."""
    eff, notes = given, {}
    fits = {"itl": (lambda e: times(e)[1], itl, "ITL", ("bandwidth", PLAUSIBLE["bandwidth"], 1.0, "--decode-efficiency"),
                    ("layer_overhead", 0.0, min(itl or 0, OVERHEAD_MAX), "--step-overhead")),
            "ttft": (lambda e: times(e)[0], ttft, "TTFT", ("compute", PLAUSIBLE["compute"], 1.0, "--prefill-efficiency"),
                     ("request_overhead", 0.0, min(ttft or 0, OVERHEAD_MAX), "--request-overhead"))}
    for round_ in range(ROUNDS):  # under load the two couple (prefill chunks share steps with decodes): alternate
        for key, (time_of, measured, what, first, second) in fits.items():
            if measured is None:
                continue
            try:
                eff, notes[key] = _fit_one(time_of, eff, given, measured, what, first, second)
            except SpecError:  # the other fit may move it into reach; the last round says why not
                if round_ == ROUNDS - 1:
                    raise
        got = times(eff)
        if all(m is None or abs(g / m - 1) < 0.005 for g, m in zip(got, (ttft, itl))) and len(notes) == \
                sum(m is not None for m in (ttft, itl)):
            break
    fitted = tuple(k for k in ("compute", "bandwidth", "layer_overhead", "request_overhead")
                   if getattr(eff, k) != getattr(given, k))
    missed = [f"{what} {_time(g)}, not the measured {_time(m)}" for what, g, m in
              zip(("TTFT", "ITL"), times(eff), (ttft, itl)) if m is not None and abs(g / m - 1) >= 0.005]
    if missed:  # under load the replay's times step where prompts begin to share prefill steps: no value hits
        notes["missed"] = ("the fit comes as close as the replay allows: " + ", ".join(missed) + " (under load the "
                           "expected time steps where prompts begin to share prefill steps)")
    return Fitted(replace(eff, fitted=fitted), tuple(notes.values()))


def _fit_one(time_of: Callable[[Efficiencies], float], eff: Efficiencies, given: Efficiencies, measured: float,
             what: str, first: tuple, second: tuple) -> tuple[Efficiencies, str]:
    """Fit ``first`` (key, low, high, flag) so time_of meets ``measured``; where its plausible range
    cannot, the time is not the hardware's: ``first`` goes back to what was given (or its default)
    and ``second`` (an overhead) is fitted instead."""
    for key, low, high, flag in (first, second):
        if key == second[0]:
            eff = replace(eff, **{first[0]: getattr(given, first[0])})
        lo_time, hi_time = time_of(replace(eff, **{key: low})), time_of(replace(eff, **{key: high}))
        falling = lo_time >= hi_time  # efficiencies: faster as they grow; overheads: slower
        fast, slow = (hi_time, lo_time) if falling else (lo_time, hi_time)
        if fast <= measured <= slow and abs(slow - fast) > 1e-4 * measured:
            value = _bisect(lambda v: time_of(replace(eff, **{key: v})), low, high, measured, falling)
            shown = f"{value:.3g}" if key in ("compute", "bandwidth") else f"{value:.3g}s" if value >= 1 else \
                f"{value * 1e3:.3g}ms" if value >= 1e-3 else f"{value * 1e6:.3g}us"  # as the option reads it back
            return replace(eff, **{key: value}), f"{flag} {shown} fitted to the measured {what} {_time(measured)}"
    best = time_of(replace(eff, **{first[0]: first[2], second[0]: second[1]}))
    if measured < best:
        raise SpecError(f"the measured {what} {_time(measured)} is faster than this GPU can give at these "
                        f"settings (at best {_time(best)}); check the GPU, the TP degree, the dtype and the "
                        "prompt and output lengths")
    raise SpecError(f"the measured {what} {_time(measured)} is slower than any plausible efficiency and overhead "
                    "explain; check that it was measured at these settings")


def _time(seconds: float) -> str:
    """A measured or fitted time to four figures: 688.7 ms, 12.35 s."""
    return f"{seconds * 1e3:.4g} ms" if seconds < 1 else f"{seconds:.4g} s"


def _bisect(f: Callable[[float], float], low: float, high: float, target: float, falling: bool) -> float:
    for _ in range(30):
        mid = (low + high) / 2
        if (f(mid) > target) == falling:
            low = mid
        else:
            high = mid
    return (low + high) / 2


class Benchmark(NamedTuple):
    """What a serving benchmark's result file says: the settings it ran and what it measured."""

    prompt: int
    output: int
    concurrency: int | None
    request_rate: float | None
    ttft: float | None
    itl: float | None


def read_benchmark(path: str) -> Benchmark:
    """vLLM's benchmark_serving / `vllm bench serve` --save-result JSON: mean prompt and output
    lengths (total tokens over completed requests), max_concurrency or request_rate, mean TTFT and
    mean ITL (falling back to TPOT) in ms."""
    from .safeio import load_json, read_text

    data = load_json(read_text(path, "benchmark result"), path)
    if not isinstance(data, dict) or "completed" not in data:
        raise SpecError(f"{path}: not a vLLM benchmark result (no 'completed'); save one with --save-result")
    done = data.get("completed") or 0
    if not isinstance(done, (int, float)) or done < 1:
        raise SpecError(f"{path}: 'completed' is {done!r}; the run finished no request")

    def mean_tokens(key: str) -> int:
        value = data.get(key)
        if not isinstance(value, (int, float)) or value <= 0:
            raise SpecError(f"{path}: '{key}' is missing or not a positive number")
        return max(1, round(value / done))

    def ms(*keys: str) -> float | None:
        value = next((data[k] for k in keys if isinstance(data.get(k), (int, float)) and data[k] > 0), None)
        return value / 1e3 if value is not None else None

    clients, rate = data.get("max_concurrency"), data.get("request_rate")
    clients = int(clients) if isinstance(clients, (int, float)) and 1 <= clients <= 1e6 and clients == int(clients) else None
    rate = float(rate) if isinstance(rate, (int, float)) and 0 < rate < float("inf") else None
    if clients is None and rate is None:
        raise SpecError(f"{path}: every request was sent at once (no max_concurrency, request_rate inf): a burst has no "
                        "steady state to calibrate on; use a run with --max-concurrency or a finite --request-rate")
    ttft, itl = ms("mean_ttft_ms"), ms("mean_itl_ms", "mean_tpot_ms")
    if ttft is None and itl is None:
        raise SpecError(f"{path}: no mean_ttft_ms, mean_itl_ms or mean_tpot_ms to calibrate on")
    return Benchmark(mean_tokens("total_input_tokens"), mean_tokens("total_output_tokens"), clients, rate, ttft, itl)
