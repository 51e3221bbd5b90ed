"""`llmcalc mfu`."""

from typing import Annotated, Optional

import typer

from ..units import parse_count, parse_seconds
from .common import (Attention, AttentionOpt, BatchOpt, CsvOpt, Dtype, DtypeOpt, Formula,
                     GenericOpt, JsonOpt, MdOpt, ModelOpt, Recompute, RecomputeOpt, SeqOpt,
                     TokensOpt, _each, _emit, _fmt, _models, app, default_seq, require_gpus,
                     unused, warn_formula_options)
from .helpfmt import HARDWARE, MODEL, RUNTIME


@app.command()
def mfu(
    model: ModelOpt,
    gpu: Annotated[str, typer.Option("--gpu", "-g", rich_help_panel=HARDWARE, help="GPU preset name or YAML file; a,b compares.")],
    step_time: Annotated[Optional[str], typer.Option("--step-time", rich_help_panel=RUNTIME, help="Seconds per step of --batch x --grad-accum sequences (0.755, 650ms).")] = None,
    tokens_per_s: Annotated[Optional[str], typer.Option("--tokens-per-s", rich_help_panel=RUNTIME, help="Measured tokens/s of the whole job (see --per-gpu).")] = None,
    per_gpu: Annotated[bool, typer.Option("--per-gpu", rich_help_panel=RUNTIME, help="--tokens-per-s is per GPU, not the whole job.")] = False,
    gpu_hours: Annotated[Optional[str], typer.Option("--gpu-hours", rich_help_panel=RUNTIME, help="GPU-hours a whole run took (6.4M); needs --tokens.")] = None,
    tokens: TokensOpt = None,
    seq: SeqOpt = None,
    batch: BatchOpt = 1,
    grad_accum: Annotated[int, typer.Option("--grad-accum", rich_help_panel=RUNTIME, help="Micro-batches accumulated per step.")] = 1,
    gpus: Annotated[Optional[int], typer.Option("--gpus", rich_help_panel=HARDWARE, show_default="1", help="GPUs in the job (needed for the whole-job rate with --gpu-hours).")] = None,
    dtype: DtypeOpt = Dtype.bf16,
    formula: Annotated[Formula, typer.Option("--formula", rich_help_panel=MODEL, help="Model FLOPs per token: palm (6N + 12LHQT, the MFU definition), detailed or 6nd.")] = Formula.palm,
    attention: AttentionOpt = Attention.full,
    recompute: RecomputeOpt = Recompute.none,
    generic: GenericOpt = False,
    json_: JsonOpt = False, csv_: CsvOpt = False, markdown: MdOpt = False,
) -> None:
    """Model and hardware FLOPs utilisation (MFU, HFU) of a measured run.

    Example: llmcalc mfu --model llama-3-70b --gpu h100-sxm --seq 8192 --tokens 15T --gpu-hours 6.4M
    """
    from ..utilization import Measurement, mfu_breakdown

    fmt = _fmt(json_, csv_, markdown)
    warn_formula_options(formula, attention)
    unused("--per-gpu", "without --tokens-per-s", per_gpu and not tokens_per_s)
    for flag, given in (("--batch", batch != 1), ("--grad-accum", grad_accum != 1)):
        unused(flag, "without --step-time (a rate or GPU-hours already counts tokens)", given and not step_time)
    run = Measurement(step_time=parse_seconds(step_time) if step_time else None,
                      tokens_per_s=parse_count(tokens_per_s) if tokens_per_s else None, per_gpu=per_gpu,
                      gpu_hours=parse_count(gpu_hours) if gpu_hours else None,
                      tokens=parse_count(tokens) if tokens else None)

    def one(m, g):
        return mfu_breakdown(m, g, run, default_seq(m, seq), batch, grad_accum, gpus, dtype.value,
                             formula.value, attention.value, recompute.value)

    _emit(_each(_models(model, generic), require_gpus(gpu), one), fmt)
