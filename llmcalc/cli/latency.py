"""`llmcalc latency`."""

from typing import Annotated, Optional

import typer

from ..spec import Parallelism
from ..units import parse_length, parse_seconds
from .common import (Attention, BatchOpt, CsvOpt, Dtype, DtypeOpt, ExitCode, GenericOpt,
                     GpusOpt, JsonOpt, KvDtypeOpt, MdOpt, ModelOpt, TpOpt, _each, _emit, _fmt, _models, app,
                     require_gpus, within_context)
from .helpfmt import HARDWARE, MODEL, OUTPUT, PARALLELISM, RUNTIME, TARGETS


@app.command()
def latency(
    model: ModelOpt,
    gpu: Annotated[str, typer.Option("--gpu", "-g", rich_help_panel=HARDWARE, help="GPU preset name or YAML file; a,b compares.")],
    gpus: GpusOpt = 1,
    tp: TpOpt = None,
    batch: BatchOpt = 1,
    prompt: Annotated[str, typer.Option("--prompt", rich_help_panel=RUNTIME, help="Prompt tokens per request (4000, 8k).")] = "1024",
    output: Annotated[str, typer.Option("--output", rich_help_panel=RUNTIME, help="Output tokens per request.")] = "256",
    dtype: DtypeOpt = Dtype.bf16,
    kv_dtype: KvDtypeOpt = None,
    attention: Annotated[Attention, typer.Option("--attention", rich_help_panel=MODEL, help="Attention FLOPs: causal (what kernels compute) or full.")] = Attention.causal,
    efficiency: Annotated[Optional[float], typer.Option("--efficiency", rich_help_panel=HARDWARE, show_default="0.8 of compute, 0.9 of bandwidth", help="Fraction of peak compute and, unless --bw-efficiency, of bandwidth reachable; 1.0 = physical bound.")] = None,
    bw_efficiency: Annotated[Optional[float], typer.Option("--bw-efficiency", rich_help_panel=HARDWARE, show_default="--efficiency when given, else 0.9", help="Fraction of memory bandwidth reachable.")] = None,
    overlap: Annotated[bool, typer.Option("--overlap/--no-overlap", rich_help_panel=PARALLELISM, help="Hide TP communication behind compute (lower bound) or add it.")] = True,
    ttft_target: Annotated[Optional[str], typer.Option("--ttft-target", rich_help_panel=TARGETS, help="Time-to-first-token target (650ms).")] = None,
    tpot_target: Annotated[Optional[str], typer.Option("--tpot-target", rich_help_panel=TARGETS, help="Time-per-output-token target (50ms).")] = None,
    check: Annotated[bool, typer.Option("--check", rich_help_panel=OUTPUT, help="Exit 1 when a target is not reachable or the layout does not fit.")] = False,
    generic: GenericOpt = False,
    json_: JsonOpt = False, csv_: CsvOpt = False, markdown: MdOpt = False,
) -> None:
    """Roofline lower bounds for serving: TTFT, TPOT, end-to-end time, tokens/s.

    Example: llmcalc latency --model llama-2-70b --gpu a800 --gpus 8 --batch 16 --prompt 4000 --ttft-target 650ms --check
    """
    from ..throughput import ServeSettings, latency_breakdown

    fmt = _fmt(json_, csv_, markdown)
    layout = Parallelism.resolve(gpus, tp=tp, mode="infer")
    settings = ServeSettings(
        batch=batch, prompt=parse_length(prompt), output=parse_length(output), tp=layout.tp, dp=layout.dp,
        dtype=dtype.value, kv_dtype=kv_dtype.value if kv_dtype else None, attention=attention.value,
        compute_efficiency=efficiency, bandwidth_efficiency=bw_efficiency,
        overlap=overlap)
    targets = dict(ttft_target=parse_seconds(ttft_target) if ttft_target else None,
                   tpot_target=parse_seconds(tpot_target) if tpot_target else None)

    def one(m, g):
        within_context(m, settings.prompt + settings.output, "--prompt + --output")
        return latency_breakdown(m, g, settings, **targets)

    results = _each(_models(model, generic), require_gpus(gpu), one)
    _emit(results, fmt)
    if check and not all(r.summary.get("feasible", True) for r in results):
        raise typer.Exit(ExitCode.CHECK_FAILED)
