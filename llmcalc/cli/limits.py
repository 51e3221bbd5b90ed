"""`llmcalc max-seq` and `llmcalc max-batch`: the memory model searched for its limits."""

from typing import Annotated, Optional

import typer

from ..units import parse_length, parse_seconds
from .common import (BatchOpt, CheckOpt, CsvOpt, GenericOpt, GpuOpt, JsonOpt, MdOpt, ModelOpt, SeqOpt,
                     _each, _emit, _fmt, _gpus, _models, app, default_seq, unused, within_context)
from .checks import fail_check
from .helpfmt import OUTPUT, RUNTIME, TARGETS
from .memory import Mode, ModeOpt, memory_options, memory_settings, settings_from_options, warn_unread, with_options


@app.command("max-seq")
@with_options(memory_options)
def max_seq(
    ctx: typer.Context,
    model: ModelOpt,
    gpu: GpuOpt = None,
    mode: ModeOpt = Mode.train,
    multiple_of: Annotated[int, typer.Option("--multiple-of", rich_help_panel=OUTPUT, min=1, help="Round the answer down to a multiple of this.")] = 1,
    minimum: Annotated[Optional[str], typer.Option("--min", rich_help_panel=TARGETS, help="With --check: exit 1 if the answer is shorter than this (32k).")] = None,
    batch: BatchOpt = 1,
    check: CheckOpt = False,
    generic: GenericOpt = False,
    json_: JsonOpt = False, csv_: CsvOpt = False, markdown: MdOpt = False,
    **options,
) -> None:
    """The longest sequence that fits in GPU memory (training or inference), and what stops it.

    Example: llmcalc max-seq --model llama-3.2-1b --gpu l40s --mini-seq 4
    """
    from ..limits import max_seq_breakdown, seq_probe

    fmt = _fmt(json_, csv_, markdown)
    common = settings_from_options(mode=mode, **options)
    settings = memory_settings(ctx, common, seq_probe(common["mini_seq"], common["parallel"].cp), batch)
    floor = parse_length(minimum) if minimum else None

    def one(m, g):
        warn_unread(ctx, m, g, settings)
        return max_seq_breakdown(m, g, settings, multiple_of, floor)

    results = _each(_models(model, generic), _gpus(gpu), one)
    _emit(results, fmt)
    if check:
        fail_check(results, lambda b: not b.summary.get("meets_minimum", b.summary["max_seq"] > 0),
                   lambda b: f"the longest sequence that fits is {b.summary['max_seq']:,} tokens"
                   + (f", below --min {minimum}" if "meets_minimum" in b.summary else ""))


@app.command("max-batch")
@with_options(memory_options)
def max_batch(
    ctx: typer.Context,
    model: ModelOpt,
    gpu: GpuOpt = None,
    mode: Annotated[Mode, typer.Option("--mode", rich_help_panel=RUNTIME, help="infer: concurrent requests; train: micro-batch.")] = Mode.infer,
    seq: SeqOpt = None,
    prompt: Annotated[Optional[str], typer.Option("--prompt", rich_help_panel=RUNTIME, help="Prompt tokens (with --output instead of --seq; for latency targets).")] = None,
    output: Annotated[Optional[str], typer.Option("--output", rich_help_panel=RUNTIME, show_default="0 with --seq", help="Output tokens per request.")] = None,
    ttft_target: Annotated[Optional[str], typer.Option("--ttft-target", rich_help_panel=TARGETS, help="Also the largest batch whose time to first token meets this (650ms).")] = None,
    tpot_target: Annotated[Optional[str], typer.Option("--tpot-target", rich_help_panel=TARGETS, help="Also the largest batch whose time per output token meets this (50ms).")] = None,
    efficiency: Annotated[Optional[float], typer.Option("--efficiency", rich_help_panel=TARGETS, show_default="0.8 of compute, 0.9 of bandwidth, as `latency`", help="For latency targets: fraction of peak compute and bandwidth reachable.")] = None,
    check: CheckOpt = False,
    generic: GenericOpt = False,
    json_: JsonOpt = False, csv_: CsvOpt = False, markdown: MdOpt = False,
    **options,
) -> None:
    """The most concurrent requests (or the largest training micro-batch) that fit, and meet latency targets.

    Example: llmcalc max-batch --model llama-2-70b --gpu a800 --gpus 2 --seq 4000 --dtype fp16 --gpu-memory 80GB --gpu-util 0.95
    """
    from ..limits import batch_latency, batch_settings, max_batch_breakdown

    fmt = _fmt(json_, csv_, markdown)
    unused("--efficiency", "without --ttft-target or --tpot-target", efficiency is not None
           and not (ttft_target or tpot_target))
    unused("--prompt", "beside --seq (the context is --seq)", bool(prompt and seq))
    unused("--output", "without --prompt or a latency target (the context is --seq)",
           bool(output) and not ((prompt and not seq) or ttft_target or tpot_target))
    out_tokens = parse_length(output) if output else 0
    targets = dict(ttft_target=parse_seconds(ttft_target) if ttft_target else None,
                   tpot_target=parse_seconds(tpot_target) if tpot_target else None)
    common = settings_from_options(mode=mode, **options)

    def one(m, g):
        context = within_context(m, parse_length(prompt) + out_tokens, "--prompt + --output",
                                 common.get("engine") or "vllm" if mode is Mode.infer else None) if prompt and not seq \
            else default_seq(m, seq)
        settings = batch_settings(memory_settings(ctx, common, context, 1),  # the search's first probe
                                  parse_length(prompt) if prompt and not seq else None)
        warn_unread(ctx, m, g, settings)
        latency = batch_latency(m, g, settings, parse_length(prompt) if prompt else None, out_tokens, efficiency,
                                targets) if any(targets.values()) else None
        return max_batch_breakdown(m, g, settings, latency)

    results = _each(_models(model, generic), _gpus(gpu), one)
    _emit(results, fmt)
    if check:
        fail_check(results, lambda b: b.summary["max_batch"] <= 0, _no_batch)


def _no_batch(b) -> str:
    """Why max-batch found none: memory (in training a micro-batch of one sequence), or the latency targets."""
    if b.summary.get("limited_by") == "latency":
        return "no batch meets the latency targets"
    return "not one sequence fits as a micro-batch" if b.inputs.get("mode") == "train" else "not one request fits"
