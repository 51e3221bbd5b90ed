"""`llmcalc flops`."""

from typing import Annotated

import typer

from .common import (Attention, AttentionOpt, BatchOpt, CsvOpt, Dtype, DtypeOpt, EffOpt, Formula, FormulaOpt,
                     GenericOpt, GpuOpt, GpusOpt, JsonOpt, MdOpt, ModelOpt, Recompute, RecomputeOpt, SeqOpt,
                     TokensOpt, _each, _emit, _fmt, _gpus, _models, app, default_seq, unused, warn_formula_options)
from .helpfmt import RUNTIME
from ..flops import DEFAULT_EFFICIENCY
from ..units import parse_count


@app.command()
def flops(
    model: ModelOpt,
    seq: SeqOpt = None,
    batch: BatchOpt = 1,
    grad_accum: Annotated[int, typer.Option("--grad-accum", rich_help_panel=RUNTIME, help="Micro-batches accumulated per step.")] = 1,
    formula: FormulaOpt = Formula.detailed,
    attention: AttentionOpt = Attention.full,
    recompute: RecomputeOpt = Recompute.none,
    tokens: TokensOpt = None,
    gpu: GpuOpt = None,
    gpus: GpusOpt = 1,
    dtype: DtypeOpt = Dtype.bf16,
    efficiency: EffOpt = None,
    generic: GenericOpt = False,
    json_: JsonOpt = False, csv_: CsvOpt = False, markdown: MdOpt = False,
) -> None:
    """FLOPs per training step and per token; with --tokens and --gpu, total compute and time.

    Example: llmcalc flops --model nanogpt-124m --formula 6nd --tokens 300e9 --gpu a100-80gb --gpus 8 --efficiency 0.3
    """
    from ..flops import FlopsSettings, flops_breakdown

    fmt = _fmt(json_, csv_, markdown)
    budget = parse_count(tokens) if tokens else None
    unused("--gpu", "without --tokens (it times a training budget)", bool(gpu) and not tokens)
    unused("--efficiency", "without --tokens and --gpu", efficiency is not None and not (tokens and gpu))
    unused("--gpus", "without --tokens and --gpu", gpus != 1 and not (tokens and gpu))
    unused("--dtype", "without --tokens and --gpu (it picks the GPU's peak)", dtype != Dtype.bf16 and not (tokens and gpu))
    warn_formula_options(formula, attention)
    eff = DEFAULT_EFFICIENCY if efficiency is None else efficiency

    def one(m, g):
        settings = FlopsSettings(
            seq=default_seq(m, seq), batch=batch, grad_accum=grad_accum, attention=attention.value,
            recompute=recompute.value, formula=formula.value, tokens=budget, gpus=gpus, efficiency=eff,
            dtype=dtype.value)
        return flops_breakdown(m, settings, g)

    _emit(_each(_models(model, generic), _gpus(gpu), one), fmt)
