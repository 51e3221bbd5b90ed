"""`llmcalc params`."""

from typing import Annotated, Optional

import typer

from ..memory.precision import PRECISIONS
from .common import (Dtype, GenericOpt, JsonOpt, CsvOpt, MdOpt, ModelOpt, Optimizer, app, _emit, _fmt, _models,
                     choices, unused)
from .helpfmt import PRECISION, TRAINING

Precision = choices("Precision", PRECISIONS)


@app.command()
def params(
    model: ModelOpt,
    dtype: Annotated[Optional[Dtype], typer.Option("--dtype", rich_help_panel=PRECISION, show_default="a quantized checkpoint's own format, else bf16", help="Weights dtype.")] = None,
    optimizer: Annotated[Optimizer, typer.Option("--optimizer", rich_help_panel=TRAINING, help="Optimizer whose states count in checkpoint_bytes.")] = Optimizer.adamw,
    precision: Annotated[Optional[Precision], typer.Option("--precision", rich_help_panel=PRECISION, show_default="mixed; fp32 with --dtype fp32", help="Training precision the checkpoint is saved from: mixed adds an fp32 master copy and fp32 states; bf16 keeps states in bf16.")] = None,
    generic: GenericOpt = False,
    json_: JsonOpt = False, csv_: CsvOpt = False, markdown: MdOpt = False,
) -> None:
    """Parameters per component, active parameters per token, weight and checkpoint size.

    Example: llmcalc params --model llama-2-7b
    """
    from ..params import params_breakdown

    fmt = _fmt(json_, csv_, markdown)
    results = [params_breakdown(m, dtype.value if dtype else None, optimizer.value, precision.value if precision else None)
               for m in _models(model, generic)]
    unused("--precision", "with an inference --dtype: its checkpoint holds the weights alone",
           precision is not None and any(b.inputs["precision"] is None for b in results))
    _emit(results, fmt)
