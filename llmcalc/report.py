"""Render Breakdowns: a terminal table, JSON, CSV or Markdown, all from the same rows.

Several breakdowns (``--model a,b``) render side by side: one value column per model.
Machine formats (JSON, CSV) carry raw base-unit numbers; tables carry formatted ones.
Terminal tables are drawn by rich, imported on the table path only: they fit the terminal's width
(the notes column wraps, numbers never do), colour only on a terminal, NO_COLOR and FORCE_COLOR
honoured, ASCII borders where the stream cannot encode box drawing.
"""

from __future__ import annotations

from typing import Sequence, TextIO

from .breakdown import Breakdown, formula
from .units import fmt_decimal, fmt_value


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
    """Every row name across the results, each where its own result has it: a row only a later
    result has goes right after the row that precedes it there (not at the end of the table)."""
    names: list[str] = []
    for b in bs:
        previous = None
        for row in b.rows:
            if row.name not in names:
                names.insert(names.index(previous) + 1 if previous is not None else 0, row.name)
            previous = row.name
    return names


def _notes(bs: Sequence[Breakdown]) -> list[str]:
    """The notes of all results; in a comparison a note only some results carry names them."""
    notes: dict[str, None] = {}
    for b in bs:
        for note in b.notes:
            owners = [x for x in bs if note in x.notes]
            label = "" if len(owners) == len(bs) else ", ".join(_label(x, bs) for x in owners) + ": "
            notes.setdefault(label + note, None)
    return list(notes)


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
        if value in (None, "", False) or isinstance(value, dict) or value in ([], ()):
            continue
        if isinstance(value, (list, tuple)):  # keep_16bit, lora_targets, offload: the names, comma-joined
            parts.append(f"{key} {','.join(map(str, value))}")
        elif isinstance(value, float) and first.inputs.unit(key) is None:  # as typed: tokens 15T, not 1.5e+13
            parts.append(f"{key} {fmt_decimal(value)}")
        else:
            parts.append(f"{key} {_display(value, first.inputs.unit(key))}")
    return " · ".join(parts)


def to_json(bs: Sequence[Breakdown], explain: bool = False) -> str:
    import json

    if len(bs) == 1:
        return json.dumps(bs[0].to_dict(explain), indent=2, allow_nan=False)
    return json.dumps({"command": bs[0].command, "results": [b.to_dict(explain) for b in bs]}, indent=2,
                      allow_nan=False)


def to_csv(bs: Sequence[Breakdown], explain: bool = False) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["model", "gpu", "name", "value", "unit", "share"] + (["formula"] if explain else []))
    for b in bs:
        for row in b.rows:
            share = b.share(row)
            writer.writerow([b.model or "", b.gpu or "", row.name, row.value, row.unit,
                             "" if share is None else f"{share:.6f}"] + ([formula(row.how)] if explain else []))
        for key, value in b.summary.items():
            writer.writerow([b.model or "", b.gpu or "", f"summary/{key}", value,
                             b.summary.unit(key) or "", ""] + ([""] if explain else []))
    return out.getvalue()


def to_markdown(bs: Sequence[Breakdown], explain: bool = False) -> str:
    many = len(bs) > 1
    head = ["name"] + ([_label(b, bs) for b in bs] if many else ["value", "share", "note"])
    numbers = len(head) - (1 if many else 2)  # the value and share columns (or one per breakdown) right-aligned
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * numbers + ["---"] * (not many)) + "|"]
    for name in _row_names(bs):
        lines.append("| " + " | ".join(_cells(bs, name)) + " |")
    for key, *values in _summary_cells(bs):
        lines.append("| " + " | ".join([f"**{key}**", *values] + ([""] * 2 if not many else [])) + " |")
    notes = _notes(bs)
    if explain:
        from .explain import explain_markdown

        formulas = explain_markdown(bs)
    else:
        formulas = []
    return "\n".join([f"### {_title(bs)}", ""] + lines + ([""] + [f"- {n}" for n in notes] if notes else [])
                     + formulas) + "\n"


def _table_title(bs: Sequence[Breakdown]) -> str:
    first = bs[0]
    binary = any(r.unit == "byte" for b in bs for r in b.rows) or any(first.summary.unit(k) == "byte" for k in first.summary)
    return _title(bs) + ("  (memory in binary units: 1 GiB = 2^30 bytes)" if binary else "")


MIN_WIDTH = 60  # the narrowest width a table is drawn at (a narrower $COLUMNS is taken as this)


def console(stream: TextIO):
    """A rich Console on ``stream``: its width the terminal's (or $COLUMNS, else 80), colour only on
    a terminal unless FORCE_COLOR, none under NO_COLOR, no guessing of styles from the text."""
    from rich.console import Console

    out = Console(file=stream, highlight=False, soft_wrap=False, emoji=False, markup=False)
    if out.width < MIN_WIDTH:  # COLUMNS=0 would print nothing at all, COLUMNS=5 a column of fragments
        out.width = MIN_WIDTH
    return out


def new_table(columns: Sequence[tuple[str, str]]):
    """A rich Table in llmcalc's look: a heavy rule under the header, light rules between columns.
    Columns are (header, kind): "name" (left), "number" (right), both never wrapped, and "note"
    (left, wraps at words: the one column that gives way to the terminal's width)."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.MINIMAL_HEAVY_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for header, kind in columns:
        if kind == "note":
            table.add_column(header, style="dim", overflow="fold", min_width=8)
        else:
            table.add_column(header, justify="right" if kind == "number" else "left", no_wrap=True)
    return table


def print_table(renderable, stream: TextIO, title: str = "", caption: str = "", after: Sequence = (),
                target=None) -> None:
    """Print a rich renderable on ``stream`` at its width, a bold title above, a dim caption and then
    ``after`` (bars, notes) below, all wrapped at words, without the spaces rich pads lines with;
    ``target``: the stream's console where the caller already made one."""
    import re

    from rich.text import Text

    target = target or console(stream)
    with target.capture() as captured:
        if title:
            target.print(Text(title, style="bold"))
        target.print(renderable)
        if caption:
            target.print(Text(caption, style="dim"))
        for line in after:
            target.print(line)
    stream.write(re.sub(r" +((?:\x1b\[[0-9;]*m)*)$", r"\1", captured.get(), flags=re.M))


NOTE_ROOM = 30  # the note column's least width beside a long summary text; narrower, notes read as fragments


def _build_table(bs: Sequence[Breakdown], width: int = 0):
    """The rows, then a section of the summary entries that are not rows. Alone, a summary text (not a number)
    that would widen the values by more than 8 characters and leave the notes less than NOTE_ROOM of ``width``
    (a layout in words) goes in the note column, where it wraps."""
    many = len(bs) > 1
    shares = many or any(b.share(r) is not None for b in bs for r in b.rows)  # else no share column
    columns = [("", "name")] + ([(_label(b, bs), "number") for b in bs] if many else
                                [("value", "number"), *([("share", "number")] if shares else []), ("", "note")])
    table = new_table(columns)
    rows = [(name, _cells(bs, name)) for name in _row_names(bs)]
    for name, cells in rows:
        style = "bold" if name in ("total", "forward") else "dim" if "/" in name else None
        table.add_row(*(cells if shares else cells[:2] + cells[3:]), style=style)
    summary = _summary_cells(bs)
    if summary:
        table.add_section()
        names = max(len(cells[0]) for cells in [c for _, c in rows] + summary)
        values = max((len(cells[1]) for _, cells in rows), default=0)
        # the width the values and notes share: less the names, " │ " between columns and a share ("100.0%")
        room = width - names - 3 * (len(columns) - 1) - 6 * shares if width else None
        for cells in summary:
            if not many and _crowds(bs[0].summary.get(cells[0]), cells[1], values, room):
                cells = [cells[0], "", *[""] * shares, cells[1]]
            table.add_row(*cells, *([""] * (len(columns) - len(cells))), style="cyan")
    return table


def _crowds(value, shown: str, values: int, room: int | None) -> bool:
    """A summary text (not a number) that would widen the value column by more than 8 characters and leave the
    notes less than NOTE_ROOM of the ``room`` the two share (None: a width not known)."""
    return isinstance(value, str) and len(shown) > values + 8 and room is not None and len(shown) + NOTE_ROOM > room


def to_table(bs: Sequence[Breakdown], out: TextIO | None = None, explain: bool = False) -> None:
    """A terminal table: hierarchical rows, right-justified values, share of total, notes; with
    ``explain``, each row's formula below."""
    import sys

    from rich.text import Text

    stream = out or sys.stdout
    target = console(stream)
    first = bs[0]
    after = []
    if len(bs) == 1 and first.get("total") and any(r.name == "total" and r.unit == "byte" for r in first.rows):
        from .chart import split_bar

        after += split_bar(first, min(60, max(20, target.width - 2)), target.width)
    after += [Text(f"· {note}", style="dim") for note in _notes(bs)]
    if explain:
        from .explain import explain_grid

        after += explain_grid(bs)
    print_table(_build_table(bs, target.width), stream, _table_title(bs), _caption(bs), after, target)


def render(bs: Sequence[Breakdown], fmt: str, out: TextIO | None = None, explain: bool = False) -> None:
    """Render in ``fmt``; ``explain`` adds each row's formula (--explain): under the table, in the
    Markdown, as a ``formula`` key of each JSON row and a ``formula`` column of the CSV."""
    import sys

    stream = out or sys.stdout
    if fmt == "table":
        to_table(bs, out, explain)
    elif fmt == "json":
        stream.write(to_json(bs, explain) + "\n")
    elif fmt == "csv":
        stream.write(to_csv(bs, explain))
    else:
        stream.write(to_markdown(bs, explain))


def render_listing(sections: dict[str, list[dict]], units: dict[str, str], fmt: str,
                   out: TextIO | None = None) -> None:
    """Tables of records (the presets listing): same formats, same unit handling."""
    import sys

    stream = out or sys.stdout
    sections = {kind: records for kind, records in sections.items() if records}
    if fmt == "json":
        import json

        stream.write(json.dumps(sections, indent=2) + "\n")
    elif fmt == "csv":
        import csv

        writer = csv.writer(stream, lineterminator="\n")
        for kind, records in sections.items():
            writer.writerow(["kind"] + list(records[0]))
            writer.writerows([kind] + list(rec.values()) for rec in records)
    else:
        for kind, records in sections.items():
            cells = [{k: _display(v, units.get(k)) for k, v in rec.items()} for rec in records]
            (_markdown_listing if fmt == "markdown" else _table_listing)(kind, cells, stream)
            stream.write("\n")


def _wordy(cells: list[dict[str, str]], key: str) -> bool:
    """A column of names (some cell starts with a letter), not of numbers."""
    return any(row[key][:1].isalpha() for row in cells)


def _markdown_listing(kind: str, cells: list[dict[str, str]], stream: TextIO) -> None:
    keys = list(cells[0])
    align = ["---" if _wordy(cells, k) else "---:" for k in keys]  # names left, numbers right, as _table_listing
    stream.write(f"### {kind}\n\n| " + " | ".join(keys) + " |\n|" + "|".join(align) + "|\n")
    for row in cells:
        stream.write("| " + " | ".join(row[k] for k in keys) + " |\n")


def _table_listing(kind: str, cells: list[dict[str, str]], stream: TextIO) -> None:
    """As many whole columns as the terminal holds, and how many more there are."""
    target = console(stream)
    keys = _fitting(list(cells[0]), cells, target.width)
    text = {k for k in keys if _wordy(cells, k)}  # names left, numbers right
    table = new_table([(k, "name" if k in text else "number") for k in keys])
    for row in cells:
        table.add_row(*[row[k] for k in keys])
    left = len(cells[0]) - len(keys)
    print_table(table, stream, kind, f"{left} more column(s) in a wider terminal or with --json" if left else "",
                target=target)


def _fitting(keys: list[str], cells: list[dict[str, str]], width: int) -> list[str]:
    """The leading columns whose widest cells fit in ``width`` (3 characters between columns): a
    listing shows whole columns, never numbers cut short."""
    used, kept = 0, []
    for key in keys:
        need = max(len(key), *(len(row[key]) for row in cells)) + (3 if kept else 0)
        if kept and used + need > width:
            break
        used += need
        kept.append(key)
    return kept
