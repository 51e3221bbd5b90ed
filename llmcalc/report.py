"""Render Breakdowns: a rich table, JSON, CSV or Markdown, all from the same rows.

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

FORMATS = ("table", "json", "csv", "markdown")


def _label(b: Breakdown) -> str:
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


def to_json(bs: Sequence[Breakdown]) -> str:
    if len(bs) == 1:
        return json.dumps(bs[0].to_dict(), indent=2)
    return json.dumps({"command": bs[0].command, "results": [b.to_dict() for b in bs]}, indent=2)


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
                             b.summary_units.get(key, ""), ""])
    return out.getvalue()


def to_markdown(bs: Sequence[Breakdown]) -> str:
    many = len(bs) > 1
    head = ["name"] + ([_label(b) for b in bs] if many else ["value", "share", "note"])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for name in _row_names(bs):
        cells = [name]
        for b in bs:
            row = next((r for r in b.rows if r.name == name), None)
            cells.append(_display(row.value, row.unit) if row else "")
            if not many:
                share = b.share(row) if row else None
                cells += ["" if share is None else f"{share * 100:.2f} %", row.note if row else ""]
        lines.append("| " + " | ".join(cells) + " |")
    for key in bs[0].summary:
        cells = [f"**{key}**"] + [_display(b.summary.get(key), b.summary_units.get(key)) for b in bs]
        lines.append("| " + " | ".join(cells + ([""] * 2 if not many else [])) + " |")
    notes = [n for b in bs for n in b.notes]
    return "\n".join([f"### {bs[0].title or bs[0].command}", ""] + lines
                     + ([""] + [f"- {n}" for n in dict.fromkeys(notes)] if notes else [])) + "\n"


def _console(out: TextIO | None, width: int | None = None):
    """A rich console; when stdout is not a terminal, wide enough that tables never wrap."""
    from rich.console import Console

    console = Console(file=out, width=width, highlight=False)
    if width is None and not console.is_terminal:
        console = Console(file=out, width=160, highlight=False)
    return console


def to_table(bs: Sequence[Breakdown], out: TextIO | None = None, width: int | None = None) -> None:
    """A rich table: indented hierarchical rows, right-justified values, share of total."""
    from rich.table import Table

    console = _console(out, width)
    many = len(bs) > 1
    first = bs[0]
    title = first.title or first.command
    subtitle = " · ".join(f"{k} {v}" for k, v in first.inputs.items()
                          if v not in (None, "", False) and not isinstance(v, (dict, list)))
    if any(r.unit == "byte" for b in bs for r in b.rows):
        title += "  (memory in binary units: 1 GiB = 2^30 bytes)"
    table = Table(title=title, caption=subtitle, title_justify="left", caption_justify="left",
                  show_edge=False, pad_edge=False)
    table.add_column("")
    for b in bs if many else [first]:
        table.add_column(_label(b) if many else "value", justify="right")
    if not many:
        table.add_column("share", justify="right", style="dim")
        table.add_column("", style="dim")
    for name in _row_names(bs):
        parent, _, leaf = name.rpartition("/")
        label = f"[dim]{parent}/[/dim]{leaf}" if parent else name
        cells: list[str] = [label]
        style = "bold" if name in ("total", "forward") else None
        for b in bs:
            row = next((r for r in b.rows if r.name == name), None)
            cells.append(_display(row.value, row.unit) if row else "")
            if not many:
                share = b.share(row) if row else None
                cells += ["" if share is None else f"{share * 100:.1f}%", row.note if row else ""]
        table.add_row(*cells, style=style)
    extra = [key for key in first.summary if not _shown(first, key)]
    if extra:
        table.add_section()
        for key in extra:
            cells = [key] + [_display(b.summary.get(key), b.summary_units.get(key)) for b in bs]
            table.add_row(*(cells + (["", ""] if not many else [])), style="cyan")
    console.print(table)
    notes = dict.fromkeys(n for b in bs for n in b.notes)
    for note in notes:
        console.print(f"[dim]· {note}[/dim]")


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
    from rich.table import Table

    console = _console(out)
    for kind, records in sections.items():
        if not records:
            continue
        keys = list(records[0])
        table = Table(title=kind, title_justify="left", show_edge=False, pad_edge=False)
        for k in keys:
            table.add_column(k, justify="left" if k in ("name", "vendor", "attention", "mlp") else "right",
                             no_wrap=True)
        for rec in records:
            table.add_row(*(_display(rec[k], units.get(k)) for k in keys))
        console.print(table)
        console.print()
