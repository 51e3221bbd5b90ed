"""Render Breakdowns: a terminal table, JSON, CSV or Markdown, all from the same rows.

Several breakdowns (``--model a,b``) render side by side: one value column per model.
Machine formats (JSON, CSV) carry raw base-unit numbers; tables carry formatted ones.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Sequence, TextIO

from .breakdown import Breakdown
from .units import fmt_value


def _label(b: Breakdown, bs: Sequence[Breakdown] = ()) -> str:
    """Column label in a comparison: what differs between the results (model, GPU or both)."""
    models = {x.model for x in bs}
    gpus = {x.gpu for x in bs}
    if len(gpus) > 1 and len(models) > 1:
        return f"{b.model} @ {b.gpu}"
    if len(gpus) > 1:
        return b.gpu or ""
    return b.model or b.gpu or b.command


def _display(value: object, unit: str | None) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)) and unit:
        return fmt_value(value, unit)
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def _shown(b: Breakdown, key: str) -> bool:
    """A summary entry that repeats a row of the same name is not printed twice in tables."""
    return any(row.name == key and row.value == b.summary[key] for row in b.rows)


def _row_names(bs: Sequence[Breakdown]) -> list[str]:
    names: dict[str, None] = {}
    for b in bs:
        for row in b.rows:
            names.setdefault(row.name, None)
    return list(names)


def _title(bs: Sequence[Breakdown]) -> str:
    first = bs[0]
    return f"{first.command}: " + ", ".join(_label(b, bs) for b in bs) if len(bs) > 1 else first.title or first.command


def _cells(bs: Sequence[Breakdown], name: str) -> list[str]:
    """One row across the results: name, value per result; alone, also its share and note."""
    cells = [name]
    for b in bs:
        row = next((r for r in b.rows if r.name == name), None)
        cells.append(_display(row.value, row.unit) if row else "")
        if len(bs) == 1:
            share = b.share(row) if row else None
            cells += ["" if share is None else f"{share * 100:.1f}%", row.note if row else ""]
    return cells


def _summary_cells(bs: Sequence[Breakdown]) -> list[list[str]]:
    """The summary entries that are not already rows, one line each across the results."""
    first = bs[0]
    return [[key] + [_display(b.summary.get(key), b.summary.unit(key)) for b in bs]
            for key in first.summary if not _shown(first, key)]


def _caption(bs: Sequence[Breakdown]) -> str:
    """The inputs every result shares, each shown in its unit (``reserve 1.00 GiB``, ``ttft_target 200 ms``)."""
    first = bs[0]
    shared = [k for k, v in first.inputs.items() if all(b.inputs.get(k) == v for b in bs)]
    parts = []
    for key in shared:
        value = first.inputs[key]
        if value in (None, "", False) or isinstance(value, (dict, list, tuple)):
            continue
        if isinstance(value, float) and first.inputs.unit(key) is None:
            parts.append(f"{key} {value:g}")
        else:
            parts.append(f"{key} {_display(value, first.inputs.unit(key))}")
    return " · ".join(parts)


def to_json(bs: Sequence[Breakdown]) -> str:
    if len(bs) == 1:
        return json.dumps(bs[0].to_dict(), indent=2, allow_nan=False)
    return json.dumps({"command": bs[0].command, "results": [b.to_dict() for b in bs]}, indent=2, allow_nan=False)


def to_csv(bs: Sequence[Breakdown]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["model", "gpu", "name", "value", "unit", "share"])
    for b in bs:
        for row in b.rows:
            share = b.share(row)
            writer.writerow([b.model or "", b.gpu or "", row.name, row.value, row.unit,
                             "" if share is None else f"{share:.6f}"])
        for key, value in b.summary.items():
            writer.writerow([b.model or "", b.gpu or "", f"summary/{key}", value,
                             b.summary.unit(key) or "", ""])
    return out.getvalue()


def to_markdown(bs: Sequence[Breakdown]) -> str:
    many = len(bs) > 1
    head = ["name"] + ([_label(b, bs) for b in bs] if many else ["value", "share", "note"])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for name in _row_names(bs):
        lines.append("| " + " | ".join(_cells(bs, name)) + " |")
    for key, *values in _summary_cells(bs):
        lines.append("| " + " | ".join([f"**{key}**", *values] + ([""] * 2 if not many else [])) + " |")
    notes = [n for b in bs for n in b.notes]
    return "\n".join([f"### {_title(bs)}", ""] + lines
                     + ([""] + [f"- {n}" for n in dict.fromkeys(notes)] if notes else [])) + "\n"


def _table_title(bs: Sequence[Breakdown]) -> str:
    first = bs[0]
    binary = any(r.unit == "byte" for b in bs for r in b.rows) or any(first.summary.unit(k) == "byte" for k in first.summary)
    return _title(bs) + ("  (memory in binary units: 1 GiB = 2^30 bytes)" if binary else "")


def _build_table(bs: Sequence[Breakdown]):
    """The rows, then a section of the summary entries that are not rows."""
    from .texttable import Table

    many = len(bs) > 1
    columns = [("", "left")] + ([(_label(b, bs), "right") for b in bs] if many
                                else [("value", "right"), ("share", "right"), ("", "left")])
    table = Table(columns, title=_table_title(bs), caption=_caption(bs))
    for name in _row_names(bs):
        styles = [None if "/" not in name else "dim"] + [None] * len(bs) + ([] if many else ["dim", "dim"])
        table.add_row(_cells(bs, name), "bold" if name in ("total", "forward") else None, styles)
    summary = _summary_cells(bs)
    if summary:
        table.add_section()
        for cells in summary:
            table.add_row(cells, "cyan")
    return table


def to_table(bs: Sequence[Breakdown], out: TextIO | None = None) -> None:
    """A terminal table: hierarchical rows, right-justified values, share of total, notes."""
    import sys

    from .texttable import paint, use_color

    stream = out or sys.stdout
    color = use_color(stream)
    first = bs[0]
    stream.write(_build_table(bs).render(color))
    if len(bs) == 1 and first.get("total") and any(r.name == "total" and r.unit == "byte" for r in first.rows):
        stream.write(split_bar(first, color))
    for note in dict.fromkeys(n for b in bs for n in b.notes):
        stream.write(paint(f"· {note}", "dim", color) + "\n")


_BAR_STYLES = ("cyan", "green", "yellow", "red", "bold", "dim")
_BAR_GLYPHS = "█▓▒░▚▞"


def split_bar(b: Breakdown, color: bool, width: int = 60) -> str:
    """One stacked bar over the top-level rows (shares of ``total``), with a legend."""
    from .texttable import paint

    total = b.value("total")
    parts = [r for r in b.rows if "/" not in r.name and r.total == "total" and r.name != "total" and r.value > 0]
    bar, legend = [], []
    for i, row in enumerate(parts):
        style, glyph = _BAR_STYLES[i % len(_BAR_STYLES)], _BAR_GLYPHS[i % len(_BAR_GLYPHS)]
        cells = round(width * row.value / total)
        bar.append(paint(glyph * cells, style, color))
        legend.append(paint(f"{glyph} {row.name} {row.value / total:.0%}", style, color))
    return "".join(bar) + "\n" + "  ".join(legend) + "\n"


def render(bs: Sequence[Breakdown], fmt: str, out: TextIO | None = None) -> None:
    import sys

    stream = out or sys.stdout
    if fmt == "table":
        to_table(bs, out)
    elif fmt == "json":
        stream.write(to_json(bs) + "\n")
    elif fmt == "csv":
        stream.write(to_csv(bs))
    else:
        stream.write(to_markdown(bs))


def render_listing(sections: dict[str, list[dict]], units: dict[str, str], fmt: str,
                   out: TextIO | None = None) -> None:
    """Tables of records (the presets listing): same formats, same unit handling."""
    import sys

    stream = out or sys.stdout
    if fmt == "json":
        stream.write(json.dumps(sections, indent=2) + "\n")
        return
    if fmt == "csv":
        writer = csv.writer(stream, lineterminator="\n")
        for kind, records in sections.items():
            if records:
                writer.writerow(["kind"] + list(records[0]))
                for rec in records:
                    writer.writerow([kind] + list(rec.values()))
        return
    if fmt == "markdown":
        for kind, records in sections.items():
            if not records:
                continue
            keys = list(records[0])
            stream.write(f"### {kind}\n\n| " + " | ".join(keys) + " |\n|" + "|".join("---" for _ in keys) + "|\n")
            for rec in records:
                stream.write("| " + " | ".join(_display(rec[k], units.get(k)) for k in keys) + " |\n")
            stream.write("\n")
        return
    from .texttable import Table, use_color

    for kind, records in sections.items():
        if not records:
            continue
        keys = list(records[0])
        table = Table([(k, "left" if k in ("name", "vendor", "attention", "mlp") else "right") for k in keys],
                      title=kind)
        for rec in records:
            table.add_row([_display(rec[k], units.get(k)) for k in keys])
        stream.write(table.render(use_color(stream)) + "\n")
