"""--explain: each row's formula with its numbers written in, and its value, so a reviewer can redo
the arithmetic by hand (the formulas come from the core: breakdown.Row.how, breakdown.formula).

A row computed by a search (max-seq, max-batch) or by a sum of more terms than a line holds
(saved activations, op by op) says ``by`` what instead, naming the module that has the terms.
"""

from __future__ import annotations

from typing import Sequence

from .breakdown import Breakdown, formula
from .report import _display, _label


# Where each command's formulas come from (each row's note adds the convention it follows).
SOURCES = {
    "params": "each matrix is in x out plus its bias, summed over layers (nanoGPT's sizing notebook, params())",
    "flops": "a [m,k] x [k,n] matmul is 2mkn FLOPs, backward 2 x forward (nanoGPT notebook; Kaplan et al. 2020); "
             "PaLM's 6N + 12LHQT (Chowdhery et al. 2022, App. B)",
    "memory": "model states per the ZeRO paper (Rajbhandari et al. 2020), saved activations per Korthikanti et al. 2022 "
              "op by op, KV cache 2 x layers x kv heads x head dim x tokens x bytes; engines as the notes say",
    "max-seq": "the memory model's rows at the longest sequence that fits (see `memory --explain`)",
    "max-batch": "the memory model's rows at the largest batch that fits (see `memory --explain`)",
    "mfu": "MFU = model FLOPs per token x tokens/s per GPU / peak (PaLM, Chowdhery et al. 2022, App. B)",
    "latency": "roofline: each phase takes max(FLOPs / compute, bytes / bandwidth) per GPU; TP all-reduce 2(t-1)/t "
               "of the values over the link (Megatron-LM)",
    "plan": "step time = compute at measured matmul and attention shares of the peak (an unfused attention core by its "
            "s x s scores' bytes) + the exposed TP, DP/ZeRO, PP, CP "
            "and EP communication (ring collectives move 2(n-1)/n of the bytes) + the MoE layers' fixed work per "
            "routed expert + the pipeline bubble, (p-1)/m and interleaved (p-1)/(v m) (Narayanan et al. 2021) + the "
            "optimizer step at HBM speed; the README's 'How the step time is estimated'",
    "serve-plan": "each layout's requests replayed through the engine's scheduler at `latency`'s step costs",
}


def explained(b: Breakdown) -> list[tuple[str, str]]:
    """(row, how it is computed) for each row: ``formula = value``, or for a row computed by a search
    or by more terms than a line holds, ``value, by ...``; a row that is zero by definition, its value."""
    lines = []
    for row in b.rows:
        text, value = formula(row.how), _display(row.value, row.unit)
        how = f"{value}, {text}" if text.startswith("by ") else f"{text} = {value}" if text not in ("", "0", "0 B") else value
        lines.append((row.name, how))
    return lines


def _heading(b: Breakdown, bs: Sequence[Breakdown]) -> tuple[str, str]:
    """(the heading over a Breakdown's formulas, the sources of its command's formulas or "")."""
    return f"How each row{' of ' + _label(b, bs) if len(bs) > 1 else ''} is computed", SOURCES.get(b.command, "")


def explain_markdown(bs: Sequence[Breakdown]) -> list[str]:
    lines = []
    for b in bs:
        heading, sources = _heading(b, bs)
        lines += ["", heading + (f" ({sources})" if sources else "") + ":", ""]
        lines += [f"- `{name}` = {how}" for name, how in explained(b)]
    return lines


def explain_grid(bs: Sequence[Breakdown]) -> list:
    """--explain under a table: each row = its formula with the numbers in = its value; formulas wrap
    at words under themselves, names never wrap; the command's sources above."""
    from rich.table import Table
    from rich.text import Text

    out = []
    for b in bs:
        heading, sources = _heading(b, bs)
        out += [Text(""), Text(heading + ":", style="bold")]
        if sources:
            out.append(Text(f"sources: {sources}", style="dim"))
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True, style="dim")
        grid.add_column(overflow="fold")
        for name, how in explained(b):
            grid.add_row(name, "= " + how)
        out.append(grid)
    return out
