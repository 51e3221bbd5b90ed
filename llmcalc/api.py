"""The Python API, for notebooks and scripts: the CLI's answers as objects.

    >>> import llmcalc
    >>> llmcalc.memory("llama-3.1-8b", "h100", mode="infer", seq="8k").summary["max_concurrency"]

Each function takes a model (preset name, YAML file, config.json, or a ModelSpec), a GPU where one
is needed (preset name, file or GPUSpec), and the CLI's settings as keywords (their option names
with underscores: ``gpu_memory="80GB"``, ``lora_targets="q,v"``); lengths, sizes and durations may
be numbers or the CLI's strings ("8k", "80GB", "650ms"). Each returns a Result: the same Breakdown
the CLI renders, shown as a table in Jupyter, with ``to_dict()`` and ``to_pandas()``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .breakdown import Breakdown
from .gpuspec import GPUSpec
from .spec import ModelSpec, Parallelism, SpecError, default_seq

__all__ = ["Result", "params", "flops", "memory", "mfu", "latency", "max_seq", "max_batch", "plan"]


class Result(Breakdown):
    """A Breakdown that shows itself in Jupyter (Markdown, HTML) and converts to a pandas DataFrame."""

    def _repr_markdown_(self) -> str:
        from .report import to_markdown

        return to_markdown([self])

    def _repr_html_(self) -> str:
        import html

        rows = "".join(f"<tr><td>{html.escape(r.name)}</td><td style='text-align:right'>{html.escape(_shown(r))}"
                       f"</td><td>{html.escape(r.note)}</td></tr>" for r in self.rows)
        return f"<b>{html.escape(self.title)}</b><table>{rows}</table>"

    def explain(self) -> str:
        """How each row is computed, one line each: ``kv_cache = 1 requests x 80 layers x ... = 1.22 GiB``
        (the CLI's --explain)."""
        from .explain import explained

        return "\n".join(f"{name} = {how}" for name, how in explained(self))

    def to_pandas(self):
        """The rows as a DataFrame (name, value in base units, unit, share of total, note); needs pandas."""
        try:
            import pandas
        except ImportError:
            raise ImportError("to_pandas() needs pandas: pip install pandas") from None
        return pandas.DataFrame([{"name": r.name, "value": r.value, "unit": r.unit, "share": self.share(r),
                                  "note": r.note} for r in self.rows])


def _shown(row) -> str:
    from .report import _display

    return _display(row.value, row.unit)


def _result(b: Breakdown) -> Result:
    return Result(**{f.name: getattr(b, f.name) for f in dataclasses.fields(b) if f.init})


def _model(model: str | ModelSpec) -> ModelSpec:
    from .presets import load_model

    return model if isinstance(model, ModelSpec) else load_model(model)


def _gpu(gpu: str | GPUSpec | None) -> GPUSpec | None:
    from .presets import load_gpu

    return gpu if gpu is None or isinstance(gpu, GPUSpec) else load_gpu(gpu)


def _need_gpu(gpu: str | GPUSpec | None, what: str) -> GPUSpec:
    if gpu is None:
        raise SpecError(f"{what} needs a gpu (a preset name such as 'h100', or a GPUSpec)")
    return _gpu(gpu)


_LISTS = ("offload", "lora_targets", "keep_16bit")
_LAYOUT = ("gpus", "tp", "pp", "dp", "cp", "ep", "sp", "etp")


def _coerce(settings: dict[str, Any]) -> dict[str, Any]:
    """The CLI's strings ("8k", "80GB", "650ms", "q,v") as numbers and tuples; numbers pass as they are."""
    from .units import setting_parser

    out = {}
    for key, value in settings.items():
        if isinstance(value, str) and setting_parser(key):
            value = setting_parser(key)(value)
        elif isinstance(value, str) and key in _LISTS:
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        out[key] = value
    return out


def _build(cls, function: str, /, **settings: Any):
    """``cls(**settings)``, a keyword it does not take refused in the API's own terms (the function the caller
    called, the nearest names it does take), not as the settings class's TypeError."""
    import inspect

    known = set(inspect.signature(cls).parameters)
    for key in settings:
        if key not in known:
            import difflib

            near = difflib.get_close_matches(key, sorted(known), n=3)
            raise TypeError(f"llmcalc.{function}() got an unexpected keyword argument {key!r}"
                            + (f"; did you mean {', '.join(near)}?" if near else ""))
    return cls(**settings)


def params(model: str | ModelSpec, dtype: str | None = None, optimizer: str = "adamw") -> Result:
    """Parameters per component, active per token, weight and checkpoint bytes (`llmcalc params`); ``dtype``
    None: a quantized checkpoint's own format, else bf16."""
    from .params import params_breakdown

    return _result(params_breakdown(_model(model), dtype, optimizer))


def flops(model: str | ModelSpec, gpu: str | GPUSpec | None = None, **settings: Any) -> Result:
    """FLOPs per step and per token; with ``tokens`` and a gpu, the budget's time (`llmcalc flops`).
    Settings: seq (default: the context, at most 8k), batch, grad_accum, attention, recompute,
    formula, tokens, gpus, efficiency (default 0.4), dtype."""
    from .flops import DEFAULT_EFFICIENCY, FlopsSettings, flops_breakdown

    m, s = _model(model), _coerce(settings)
    s.setdefault("seq", default_seq(m))
    s.setdefault("efficiency", DEFAULT_EFFICIENCY)
    return _result(flops_breakdown(m, _build(FlopsSettings, "flops", **s), _gpu(gpu)))


def _memory_settings(m: ModelSpec, settings: dict[str, Any], mode_default: str = "train", function: str = "memory"):
    from .memory import MemorySettings

    s = _coerce(settings)
    mode = s.setdefault("mode", mode_default)
    layout = {key: s.pop(key) for key in _LAYOUT if key in s}
    s.setdefault("seq", default_seq(m))
    return _build(MemorySettings, function, parallel=Parallelism.resolve(**layout, mode=mode), **s)


def memory(model: str | ModelSpec, gpu: str | GPUSpec | None = None, **settings: Any) -> Result:
    """Memory per GPU and whether it fits (`llmcalc memory`). Settings: every MemorySettings field
    (mode, seq, batch, dtype, zero, recompute, finetune, engine ...) and the layout (gpus, tp, pp,
    dp, cp, ep, etp, sp) as keywords."""
    from .memory import memory_breakdown

    m = _model(model)
    return _result(memory_breakdown(m, _gpu(gpu), _memory_settings(m, settings)))


def max_seq(model: str | ModelSpec, gpu: str | GPUSpec | None = None, multiple_of: int | str = 1,
            minimum: int | str | None = None, **settings: Any) -> Result:
    """The longest sequence that fits (`llmcalc max-seq`); settings as `memory`."""
    from .limits import max_seq_breakdown, seq_probe

    if settings.get("prompt") is not None:  # refused here: the search's first probe is shorter than any prompt
        raise SpecError("max-seq searches the whole context; a prompt has no place in it (max-batch takes one)")
    m, extra = _model(model), _coerce({"multiple_of": multiple_of, "minimum": minimum})
    s = _memory_settings(m, {**settings, "seq": seq_probe(settings.get("mini_seq", 1), settings.get("cp") or 1)},
                         function="max_seq")
    return _result(max_seq_breakdown(m, _gpu(gpu), s, extra["multiple_of"], extra["minimum"]))


def max_batch(model: str | ModelSpec, gpu: str | GPUSpec | None = None, **settings: Any) -> Result:
    """The most concurrent requests (infer, the default) or the largest micro-batch (mode="train")
    that fit (`llmcalc max-batch`); settings as `memory`."""
    from .limits import max_batch_breakdown

    m = _model(model)
    return _result(max_batch_breakdown(m, _gpu(gpu), _memory_settings(m, settings, "infer", "max_batch")))


def mfu(model: str | ModelSpec, gpu: str | GPUSpec, seq: int | str | None = None, batch: int = 1,
        grad_accum: int = 1, gpus: int | None = None, dtype: str = "bf16", formula: str = "palm",
        attention: str = "full", recompute: str = "none", **measured: Any) -> Result:
    """MFU and HFU of a measured run (`llmcalc mfu`): one of step_time, tokens_per_s (per_gpu=True for
    a per-GPU rate) or gpu_hours with tokens."""
    from .throughput import Measurement, mfu_breakdown

    m = _model(model)
    length = _coerce({"seq": seq})["seq"] if seq is not None else default_seq(m)
    return _result(mfu_breakdown(m, _need_gpu(gpu, "mfu"), Measurement(**_coerce(measured)), length, batch,
                                 grad_accum, gpus, dtype, formula, attention, recompute))


def latency(model: str | ModelSpec, gpu: str | GPUSpec, gpus: int = 1, ttft_target: float | str | None = None,
            tpot_target: float | str | None = None, engine: str = "vllm", concurrency: int | None = None,
            request_rate: float | None = None, **settings: Any) -> Result:
    """Expected serving latency with its band, beside the roofline bound (`llmcalc latency`).
    Settings: batch, prompt, output, dtype, kv_dtype, attention, compute_efficiency,
    bandwidth_efficiency, overlap (the bound's); prefill_efficiency, decode_efficiency,
    step_overhead, request_overhead (the expected values'); max_num_batched_tokens, max_num_seqs; the engine as
    launched: engine_version, gpu_util, max_model_len ("32k"); measured_ttft, measured_itl (calibrate the expected
    values to a measurement at these settings); tp (default all gpus)."""
    from .expected_latency import latency_estimate
    from .schedule import load_of
    from .serving import Efficiencies
    from .throughput import ServeSettings

    s = _coerce(settings)
    layout = Parallelism.resolve(gpus, tp=s.pop("tp", None), dp=s.pop("dp", None), mode="infer")
    targets = _coerce({"ttft_target": ttft_target, "tpot_target": tpot_target})
    eff = Efficiencies(compute=s.pop("prefill_efficiency", None), bandwidth=s.pop("decode_efficiency", None),
                       layer_overhead=s.pop("step_overhead", None), request_overhead=s.pop("request_overhead", None))
    chunk, seqs = s.pop("max_num_batched_tokens", None), s.pop("max_num_seqs", None)
    measured = (s.pop("measured_ttft", None), s.pop("measured_itl", None))
    serve = _build(ServeSettings, "latency", tp=layout.tp, dp=layout.dp, tp_implied=layout.tp_implied, **s)
    load = load_of(serve.prompt, serve.output, concurrency, request_rate)
    return _result(latency_estimate(_model(model), _need_gpu(gpu, "latency"), serve, engine, eff, load, chunk, seqs,
                                    **targets, measured=measured))


def plan(model: str | ModelSpec, cluster: str | None = None, gpu: str | None = None, gpus: int | None = None,
         nodes: int | None = None, seq: int | str | None = None, global_batch: int | None = None,
         batch_tokens: float | str | None = None, tokens: float | str | None = None, dtype: str = "bf16",
         top: int = 5, max_days: float | None = None, **constraints: Any) -> Result:
    """Training layouts of a cluster that fit, fastest first (`llmcalc plan`): ``summary["layouts"]`` and the
    best one's step time by part. Constraints as the CLI's: tp, pp, cp, ep, etp, dp, vpp, micro_batch, max_tp,
    recompute and zero (tuples of the choices to try), sp, tp_overlap, tp_async, ep_overlap, pp_overlap, dp_overlap,
    backward_prefetch, attention_kernel, gpu_util, loss, grad_reduce, fp8_recipe, fp8_params, expert_overhead
    ("0.4ms" or seconds), tp_overlap_sms, offload_layers (a number, or "auto": the fewest a layout fits with);
    gpus_per_node. ``max_days`` (with ``tokens``): where the fastest layout takes longer, ``summary["gpus_within"]``
    is the fewest GPUs whose fastest layout does not (fewest.gpus_within), None where no count does."""
    from .plan import Constraints, Target
    from .planinputs import offload_count
    from .cluster import hardware
    from .trainplan import global_batch as batch_of, plan_breakdown
    from .units import parse_batch_tokens, parse_length

    m = _model(model)
    where, count = hardware(gpu, cluster, gpus, nodes, constraints.pop("gpus_per_node", None))
    given = _coerce({"seq": seq, "tokens": tokens})
    given["batch_tokens"] = None if batch_tokens is None else parse_batch_tokens(batch_tokens)  # numbers checked too
    length = default_seq(m) if seq is None else parse_length(given["seq"])
    target = Target(gpus=count, seq=length, global_batch=batch_of(global_batch, given["batch_tokens"], length),
                    tokens=given["tokens"], dtype=dtype)
    for key in ("offload", "offload_layers"):  # Constraints' name and the CLI's: a count or "auto"
        if key in constraints:
            constraints["offload"] = offload_count(constraints.pop(key))
    if max_days is not None and (max_days <= 0 or not target.tokens):
        raise SpecError("max_days needs tokens (the run whose time it bounds) and a positive number of days")
    return _result(plan_breakdown(m, where, target, _build(Constraints, "plan", **_coerce(constraints)), top,
                                  max_days * 86400 if max_days else None))
