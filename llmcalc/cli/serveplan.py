"""`llmcalc serve-plan`."""

from typing import Annotated, Optional

import typer

from ..units import parse_length, parse_seconds
from .common import (CheckOpt, CsvOpt, Dtype, DtypeOpt, Engine, GenericOpt, JsonOpt, KvDtypeOpt, MdOpt, ModelOpt,
                     _fmt, _models, app, require_gpus, within_context)
from .checks import fail_check
from .helpfmt import HARDWARE, RUNTIME, TARGETS
from .latency import MaxModelLenOpt, ServeUtilOpt
from .memory import EngineVersionOpt


@app.command("serve-plan")
def serve_plan(
    model: ModelOpt,
    gpu: Annotated[str, typer.Option("--gpu", "-g", rich_help_panel=HARDWARE, help="GPU kinds to consider, a,b (preset names or YAML files).")],
    request_rate: Annotated[Optional[float], typer.Option("--request-rate", rich_help_panel=RUNTIME, show_default="none: give it or --concurrency", help="Requests per second arriving at random (Poisson).")] = None,
    concurrency: Annotated[Optional[int], typer.Option("--concurrency", rich_help_panel=RUNTIME, show_default="none: give it or --request-rate", help="Clients in a closed loop, instead of a rate.")] = None,
    prompt: Annotated[str, typer.Option("--prompt", rich_help_panel=RUNTIME, help="Prompt tokens per request (2k).")] = "1024",
    output: Annotated[str, typer.Option("--output", rich_help_panel=RUNTIME, help="Output tokens per request.")] = "256",
    ttft_target: Annotated[Optional[str], typer.Option("--ttft-target", rich_help_panel=TARGETS, help="Mean time to first token at most (1s).")] = None,
    tpot_target: Annotated[Optional[str], typer.Option("--tpot-target", rich_help_panel=TARGETS, help="Mean time per output token at most (50ms).")] = None,
    engine: Annotated[Engine, typer.Option("--engine", rich_help_panel=RUNTIME, help="Serving engine whose step costs and scheduler apply (hf does not batch continuously: refused).")] = Engine.vllm,
    dtype: DtypeOpt = Dtype.bf16,
    kv_dtype: KvDtypeOpt = None,
    gpu_price: Annotated[Optional[str], typer.Option("--gpu-price", rich_help_panel=HARDWARE, show_default="none: rank by GPU count", help="Dollars per GPU-hour: one number, or gpu=price,... (h100=2.5,a100-80gb=1.6).")] = None,
    max_gpus: Annotated[int, typer.Option("--max-gpus", rich_help_panel=HARDWARE, help="GPUs at most in a plan.")] = 64,
    engine_version: EngineVersionOpt = None,
    gpu_util: ServeUtilOpt = None,
    max_model_len: MaxModelLenOpt = None,
    check: CheckOpt = False,
    generic: GenericOpt = False,
    json_: JsonOpt = False, csv_: CsvOpt = False, markdown: MdOpt = False,
) -> None:
    """The fewest GPUs (or dollars) that serve a traffic within latency targets, and why other layouts fail.

    Example: llmcalc serve-plan --model llama-3.1-70b --gpu h100,a100-80gb --request-rate 10 --prompt 2k --output 256 --ttft-target 1s --tpot-target 50ms
    """
    from ..traffic import Load
    from ..serveplan import Traffic, gpu_prices, plan

    fmt = _fmt(json_, csv_, markdown)
    traffic = Traffic(Load(parse_length(prompt), parse_length(output), concurrency, request_rate),
                      parse_seconds(ttft_target) if ttft_target else None,
                      parse_seconds(tpot_target) if tpot_target else None)
    gpus = require_gpus(gpu)
    prices = gpu_prices(gpu_price, gpus)
    launch = dict(engine_version=engine_version, gpu_util=gpu_util,
                  max_model_len=parse_length(max_model_len) if max_model_len else None)
    results = []
    for m in _models(model, generic):
        within_context(m, launch["max_model_len"] or traffic.load.prompt + traffic.load.output,
                       "--max-model-len" if max_model_len else "--prompt + --output", engine.value)
        results.append(plan(m, gpus, traffic, engine.value, dtype.value, kv_dtype.value if kv_dtype else None, prices,
                            max_gpus, launch))
    _show(results, fmt)
    if check:
        fail_check(results, lambda b: not b.summary["meets"], lambda b: "no layout meets the targets")


def _show(results: list, fmt: str) -> None:
    from .common import EXPLAIN, _emit, sweeping, unused

    if fmt == "json" or sweeping():
        _emit(results, fmt)
        return
    import sys

    from ..report import render_listing
    from ..serveplan import LAYOUT_UNITS

    for b in results:
        shown = [{k: v for k, v in layout.items() if k not in ("pp", "meets")} for layout in b.summary["layouts"]]
        render_listing({f"{b.title}: layouts meeting the targets, cheapest first": shown}, LAYOUT_UNITS, fmt)
        if fmt == "csv":
            continue
        if not shown:  # no table to carry the title: say it, then why
            sys.stdout.write(f"{'### ' if fmt == 'markdown' else ''}{b.title}: no layout meets the targets\n")
        if fmt == "markdown":
            sys.stdout.write("".join(f"- {note}\n" for note in b.notes))
            continue
        from rich.text import Text

        from ..report import print_table

        # the reasons (why each rejected layout fails), wrapped at words to the terminal
        lines = [Text(f"· {note}", style="dim") for note in b.notes]
        print_table(lines[0], sys.stdout, after=lines[1:])
    explained = [b for b in results if b.rows]
    unused("--explain", "with --csv here (one row a layout: --json carries the formulas)", EXPLAIN["on"] and fmt == "csv")
    if EXPLAIN["on"] and explained and fmt != "csv":  # the cheapest layout's rows, each with its formula
        from ..explain import explain_grid, explain_markdown

        if fmt == "markdown":
            sys.stdout.write("\n".join(explain_markdown(explained)) + "\n")
        else:
            from rich.console import Group

            from ..report import console

            console(sys.stdout).print(Group(*explain_grid(explained)))
