"""The Python API, for notebooks and scripts: the CLI's answers as objects.

    >>> import llmcalc
    >>> llmcalc.memory("llama-3.1-8b", "h100", mode="infer", seq="8k").summary["max_concurrency"]

Every command but the `presets` listing is a function of its name (max-seq is ``max_seq``). Each takes a model
(preset name, YAML file, config.json, or a ModelSpec), a GPU where one is needed (preset name, file or GPUSpec), and
the CLI's settings as keywords (their option names with underscores: ``gpu_memory="80GB"``, ``lora_targets="q,v"``);
lengths, sizes, durations and counts may be numbers or the CLI's strings ("8k", "80GB", "650ms", "16"), checked as the
CLI checks them. Each returns a Result: the same Breakdown the CLI renders, shown as a table in Jupyter, with
``to_dict()`` and ``to_pandas()``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .breakdown import Breakdown
from .dtypes import DTYPES
from .gpuspec import GPUSpec
from .spec import ModelSpec, Parallelism, SpecError, check_choice, default_seq

__all__ = ["Result", "params", "flops", "memory", "mfu", "latency", "max_seq", "max_batch", "serve_plan", "plan"]


class Result(Breakdown):
    """A Breakdown that shows itself in Jupyter (Markdown, HTML) and converts to a pandas DataFrame."""

    def value(self, name: str) -> float:
        """The value of the row called ``name``; a name no row has is a KeyError naming the nearest rows."""
        try:
            return super().value(name)
        except KeyError:
            import difflib

            names = [r.name for r in self.rows]
            near = difflib.get_close_matches(str(name), names, n=3)
            said = f"did you mean {', '.join(near)}?" if near else f"its rows: {', '.join(names)}"
            raise KeyError(f"{self.command} has no row {name!r}; {said}") from None

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


def _named(value: Any, what: str, spec: str = "") -> str:
    """A preset name or file path (str or os.PathLike) to load; anything else refused in one line."""
    import os

    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    raise TypeError(f"llmcalc: the {what} must be a preset name" + (f", a file path or a {spec}" if spec else
                    " or a file path") + f", got {type(value).__name__} {value!r}")


def _model(model: str | ModelSpec) -> ModelSpec:
    from .presets import load_model

    return model if isinstance(model, ModelSpec) else load_model(_named(model, "model", "ModelSpec"))


def _gpu(gpu: str | GPUSpec | None) -> GPUSpec | None:
    from .presets import load_gpu

    return gpu if gpu is None or isinstance(gpu, GPUSpec) else load_gpu(_named(gpu, "gpu", "GPUSpec"))


def _need_gpu(gpu: str | GPUSpec | None, what: str) -> GPUSpec:
    if gpu is None:
        raise SpecError(f"{what} needs a gpu (a preset name such as 'h100', or a GPUSpec)")
    return _gpu(gpu)


_LISTS = ("offload", "lora_targets", "keep_16bit", "recompute_modules")
_LAYOUT = ("gpus", "tp", "pp", "dp", "cp", "ep", "sp", "etp")
# The CLI's integer options (counts, degrees: whole) and float ones (fractions, rates): numbers or their digits ("16")
_WHOLE = frozenset(("batch", "grad_accum", "gpus", "nodes", "gpus_per_node", "tp", "pp", "dp", "cp", "ep", "etp", "vpp",
                    "zero", "micro_batch", "max_tp", "mini_seq", "max_num_seqs", "kv_block", "block_size", "lora_rank",
                    "group_size", "offload_layers", "concurrency", "max_gpus", "global_batch", "top", "tp_overlap_sms"))
_REAL = frozenset(("request_rate", "efficiency", "compute_efficiency", "bandwidth_efficiency", "prefill_efficiency",
                   "decode_efficiency", "gpu_util", "lora_dropout", "max_days"))
_ALIASES = {"block_size": "kv_block", "max_num_batched_tokens": "prefill_chunk"}  # CLI option -> MemorySettings field


def _coerce(settings: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """The CLI's strings ("8k", "80GB", "650ms", "q,v", "16") as numbers and tuples, numbers checked as the CLI checks
    its (a length or count whole, a dtype one of DTYPES); None, and ``keep`` (plan's lists of choices), as they are."""
    return {key: value if value is None or key in keep else _coerced(key, value) for key, value in settings.items()}


def _coerced(key: str, value: Any) -> Any:
    import numbers

    from .units import UnitError, setting_parser

    parse = setting_parser(key)
    if parse is not None and isinstance(value, (str, numbers.Real)):
        try:
            return parse(str(value))  # a number as typed: 4096.5 is no length, as "4096.5" is none on the CLI
        except UnitError as exc:
            raise SpecError(f"{key}: {exc}") from None
    if key in _WHOLE or key in _REAL:
        return _number(key, value, key in _WHOLE)
    if key in _LISTS and isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if key in ("dtype", "kv_dtype"):  # the CLI's --dtype choices (cli/common.Dtype)
        check_choice(key, value, DTYPES)
    return value


def _number(key: str, value: Any, whole: bool) -> int | float:
    """A count (``whole``) or a fraction, from a number or its digits; else refused naming the setting."""
    from .units import MAX_QUANTITY

    import re

    if whole and isinstance(value, str) and re.fullmatch(r"\d{1,3}(,\d{3})+", value.strip()):  # "1,024": thousands
        value = value.replace(",", "")
    try:  # "1_024" as Python reads it; "2,5" is no number
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not abs(number) <= MAX_QUANTITY or (whole and not number.is_integer()):
        raise SpecError(f"{key} must be {'a whole number' if whole else 'a number'} (at most 10^15), got {value!r}")
    return int(number) if whole else number


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


def _unused(what: str, reason: str, given: bool) -> None:
    """A setting the others leave without effect: one warning, as the CLI's (silently ignoring it would mislead)."""
    if given:
        import warnings

        warnings.warn(f"{what} has no effect {reason}", UserWarning, stacklevel=3)


def params(model: str | ModelSpec, dtype: str | None = None, optimizer: str = "adamw",
           precision: str | None = None) -> Result:
    """Parameters per component, active per token, weight and checkpoint bytes (`llmcalc params`); ``dtype``
    None: a quantized checkpoint's own format, else bf16; ``precision`` the training precision the checkpoint is
    saved from (None: mixed, fp32 for fp32 weights)."""
    from .params import params_breakdown

    return _result(params_breakdown(_model(model), _coerce({"dtype": dtype})["dtype"], optimizer, precision))


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

    s = {_ALIASES.get(key, key): value for key, value in _coerce(settings).items()}
    mode = s.setdefault("mode", mode_default)
    layout = {key: s.pop(key) for key in _LAYOUT if key in s}
    s.setdefault("seq", default_seq(m))
    return _build(MemorySettings, function, parallel=Parallelism.resolve(**layout, mode=mode), **s)


def memory(model: str | ModelSpec, gpu: str | GPUSpec | None = None, **settings: Any) -> Result:
    """Memory per GPU and whether it fits (`llmcalc memory`). Settings: every MemorySettings field
    (mode, seq, batch, dtype, zero, recompute, finetune, engine ...) and the layout (gpus, tp, pp,
    dp, cp, ep, etp, sp) as keywords; block_size and max_num_batched_tokens, the CLI's names, too."""
    from .memory import memory_breakdown

    m = _model(model)
    return _result(memory_breakdown(m, _gpu(gpu), _memory_settings(m, settings)))


def max_seq(model: str | ModelSpec, gpu: str | GPUSpec | None = None, multiple_of: int | str = 1,
            minimum: int | str | None = None, **settings: Any) -> Result:
    """The longest sequence that fits (`llmcalc max-seq`); settings as `memory` but seq (the length searched)."""
    from .limits import max_seq_breakdown, seq_probe

    for key, where in (("seq", "memory and max-batch take"), ("prompt", "max-batch takes")):
        if settings.get(key) is not None:  # the search's probes are its own lengths: a given one would be ignored
            raise SpecError(f"max-seq searches the whole context; a {key} has no place in it ({where} one)")
    m, s = _model(model), _coerce({**settings, "multiple_of": multiple_of, "minimum": minimum})
    extra = {key: s.pop(key) for key in ("multiple_of", "minimum")}
    s = _memory_settings(m, {**s, "seq": seq_probe(s.get("mini_seq", 1), s.get("cp") or 1)}, function="max_seq")
    return _result(max_seq_breakdown(m, _gpu(gpu), s, extra["multiple_of"], extra["minimum"]))


def max_batch(model: str | ModelSpec, gpu: str | GPUSpec | None = None, seq: int | str | None = None,
              prompt: int | str | None = None, output: int | str | None = None, ttft_target: float | str | None = None,
              tpot_target: float | str | None = None, efficiency: float | None = None, **settings: Any) -> Result:
    """The most concurrent requests (infer, the default) or the largest micro-batch (mode="train") that fit
    (`llmcalc max-batch`); settings as `memory`. The context is ``seq``, or ``prompt`` + ``output``; ``ttft_target``
    and ``tpot_target`` (infer, a gpu) also bound the batch by latency, at ``efficiency`` of peak (as `latency`)."""
    from .limits import batch_latency, batch_settings, max_batch_breakdown

    m, g = _model(model), _gpu(gpu)
    a = _coerce(dict(seq=seq, prompt=prompt, output=output, ttft_target=ttft_target, tpot_target=tpot_target,
                     efficiency=efficiency))
    targets = {key: a[key] for key in ("ttft_target", "tpot_target")}
    _unused("efficiency", "without ttft_target or tpot_target", efficiency is not None and not any(targets.values()))
    _unused("prompt", "beside seq (the context is seq)", a["prompt"] is not None and a["seq"] is not None)
    _unused("output", "without prompt or a latency target (the context is seq)", a["output"] is not None
            and not ((a["prompt"] and not a["seq"]) or any(targets.values())))
    out, from_prompt = a["output"] or 0, a["prompt"] is not None and a["seq"] is None
    context = a["prompt"] + out if from_prompt else a["seq"] or default_seq(m)
    s = batch_settings(_memory_settings(m, {**settings, "seq": context}, "infer", "max_batch"),
                       a["prompt"] if from_prompt else None)
    latency = batch_latency(m, g, s, a["prompt"], out, a["efficiency"], targets) if any(targets.values()) else None
    return _result(max_batch_breakdown(m, g, s, latency))


def mfu(model: str | ModelSpec, gpu: str | GPUSpec, seq: int | str | None = None, batch: int = 1,
        grad_accum: int = 1, gpus: int | None = None, dtype: str = "bf16", formula: str = "palm",
        attention: str = "full", recompute: str = "none", **measured: Any) -> Result:
    """MFU and HFU of a measured run (`llmcalc mfu`): one of step_time, tokens_per_s (per_gpu=True for
    a per-GPU rate) or gpu_hours with tokens."""
    from .utilization import Measurement, mfu_breakdown

    m = _model(model)
    a = _coerce(dict(seq=seq, batch=batch, grad_accum=grad_accum, gpus=gpus, dtype=dtype))
    run = _build(Measurement, "mfu", **_coerce(measured))
    return _result(mfu_breakdown(m, _need_gpu(gpu, "mfu"), run, a["seq"] or default_seq(m), a["batch"],
                                 a["grad_accum"], a["gpus"], a["dtype"], formula, attention, recompute))


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
    from .traffic import load_of
    from .serving import Efficiencies
    from .throughput import ServeSettings

    s = _coerce(settings)
    a = _coerce(dict(gpus=gpus, ttft_target=ttft_target, tpot_target=tpot_target, concurrency=concurrency,
                     request_rate=request_rate))
    layout = Parallelism.resolve(a["gpus"], tp=s.pop("tp", None), dp=s.pop("dp", None), mode="infer")
    eff = Efficiencies(compute=s.pop("prefill_efficiency", None), bandwidth=s.pop("decode_efficiency", None),
                       layer_overhead=s.pop("step_overhead", None), request_overhead=s.pop("request_overhead", None))
    chunk, seqs = s.pop("max_num_batched_tokens", None), s.pop("max_num_seqs", None)
    measured = (s.pop("measured_ttft", None), s.pop("measured_itl", None))
    serve = _build(ServeSettings, "latency", tp=layout.tp, dp=layout.dp, tp_implied=layout.tp_implied, **s)
    load = load_of(serve.prompt, serve.output, a["concurrency"], a["request_rate"])
    return _result(latency_estimate(_model(model), _need_gpu(gpu, "latency"), serve, engine, eff, load, chunk, seqs,
                                    ttft_target=a["ttft_target"], tpot_target=a["tpot_target"], measured=measured))


def serve_plan(model: str | ModelSpec, gpu: str | GPUSpec | list, request_rate: float | None = None,
               concurrency: int | None = None, prompt: int | str = 1024, output: int | str = 256,
               ttft_target: float | str | None = None, tpot_target: float | str | None = None, engine: str = "vllm",
               dtype: str = "bf16", kv_dtype: str | None = None, gpu_price: float | str | dict | None = None,
               max_gpus: int = 64, engine_version: str | None = None, gpu_util: float | None = None,
               max_model_len: int | str | None = None) -> Result:
    """The fewest GPUs (or dollars) serving a traffic within latency targets (`llmcalc serve-plan`): summary["layouts"]
    cheapest first, notes why the others fail. ``gpu``: the kinds, "h100,a100-80gb" or a list; ``gpu_price``: dollars
    per GPU-hour, one number, {"h100": 2.5, ...} or "h100=2.5,..."; request_rate or concurrency; a target or both."""
    from .traffic import Load
    from .serveplan import Traffic, check_max_gpus, plan as plan_layouts

    m, kinds = _model(model), _gpus(gpu)
    a = _coerce(dict(request_rate=request_rate, concurrency=concurrency, prompt=prompt, output=output,
                     ttft_target=ttft_target, tpot_target=tpot_target, dtype=dtype, kv_dtype=kv_dtype,
                     max_gpus=max_gpus, gpu_util=gpu_util, max_model_len=max_model_len))
    check_max_gpus(a["max_gpus"])  # said before the load's own checks
    traffic = Traffic(Load(*(a[k] for k in ("prompt", "output", "concurrency", "request_rate"))), a["ttft_target"],
                      a["tpot_target"])
    launch = dict(engine_version=engine_version, gpu_util=a["gpu_util"], max_model_len=a["max_model_len"])
    return _result(plan_layouts(m, kinds, traffic, engine, a["dtype"], a["kv_dtype"], _prices(gpu_price, kinds),
                                a["max_gpus"], launch))


def _gpus(gpu: str | GPUSpec | list | None) -> list[GPUSpec]:
    """One GPU kind or several: "h100,a100-80gb", or a list of names, files or GPUSpecs."""
    names = [part.strip() for part in gpu.split(",") if part.strip()] if isinstance(gpu, str) else gpu
    kinds = [_gpu(g) for g in (names if isinstance(names, (list, tuple)) else [names])]
    if not kinds or None in kinds:
        raise SpecError("serve_plan needs a gpu: a preset name such as 'h100', several ('h100,a100-80gb'), a GPUSpec")
    return kinds


def _prices(price: float | str | dict | None, kinds: list[GPUSpec]) -> dict[str, float]:
    """gpu_price read and checked as the CLI's --gpu-price is (serveplan.gpu_prices): every kind priced, none else."""
    from .serveplan import gpu_prices as read

    text = ",".join(f"{_named(k, 'gpu')}={v}" for k, v in price.items()) if isinstance(price, dict) else price
    return read(None if text is None else str(text), kinds)


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

    m, per_node = _model(model), constraints.pop("gpus_per_node", None)
    a = _coerce(dict(gpus=gpus, nodes=nodes, seq=seq, global_batch=global_batch, batch_tokens=batch_tokens,
                     tokens=tokens, dtype=dtype, top=top, max_days=max_days, gpus_per_node=per_node))
    where, count = hardware(gpu and _named(gpu, "gpu"), cluster and _named(cluster, "cluster"),
                            a["gpus"], a["nodes"], a["gpus_per_node"])
    length = a["seq"] or default_seq(m)
    target = Target(gpus=count, seq=length, global_batch=batch_of(a["global_batch"], a["batch_tokens"], length),
                    tokens=a["tokens"], dtype=a["dtype"])
    for key in ("offload", "offload_layers"):  # Constraints' name and the CLI's: a count or "auto"
        if key in constraints:
            constraints["offload"] = offload_count(constraints.pop(key))
    if a["max_days"] is not None and (a["max_days"] <= 0 or not target.tokens):
        raise SpecError("max_days needs tokens (the run whose time it bounds) and a positive number of days")
    return _result(plan_breakdown(m, where, target, _build(Constraints, "plan", **_coerce(constraints, keep=("zero",))),
                                  a["top"], a["max_days"] * 86400 if a["max_days"] else None))
