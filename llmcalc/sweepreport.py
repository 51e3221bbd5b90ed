"""A sweep's answers as one table: one row per swept value (and per model and GPU compared), the
command's key columns; JSON and CSV carry the same rows in base units (cli/sweep.py runs the points)."""

from __future__ import annotations

from typing import Any, TextIO

from .breakdown import Breakdown
from .report import _display, _markdown_listing, _table_listing


# The columns a sweep tabulates per command (summary entries, else rows); memory adds its components.
SWEEP_KEYS = {
    "params": ("total", "active", "weight_bytes", "checkpoint_bytes"),
    "flops": ("total", "per_token_total", "model_flops", "train_time"),
    "memory": ("total", "fits", "headroom", "max_concurrency"),
    "max-seq": ("max_seq", "dominant", "limited_by_memory"),
    "max-batch": ("max_batch", "dominant", "max_concurrency", "limited_by"),
    "mfu": ("mfu", "hfu", "tokens_per_s_per_gpu"),
    "latency": ("ttft", "tpot", "e2e", "overloaded", "feasible", "meets"),
    "serve-plan": ("gpus", "meets"),
    "plan": ("layout", "step_time", "mfu", "train_time", "memory", "found"),
}


def sweep_columns(b: Breakdown) -> dict[str, tuple[Any, str | None]]:
    """name -> (raw value, unit) of a sweep row: memory's top-level components, then the command's keys."""
    out: dict[str, tuple[Any, str | None]] = {}
    summary = b.summary
    for key in SWEEP_KEYS.get(b.command, ()):
        if key in summary:
            out[key] = tuple(summary.quantity(key))
        elif (row := next((r for r in b.rows if r.name == key), None)) is not None:
            out[key] = (row.value, row.unit)
    if b.command == "memory":
        for row in b.rows:
            if "/" not in row.name and row.unit == "byte" and row.name != "total":  # every component, alive or not
                out[row.name] = (row.value, row.unit)
    return out


def _sweep_records(name: str, points: list) -> list[dict[str, tuple[Any, Any]]]:
    """Each result of each point as {column: (raw value, unit)}; the swept column's pair is
    (value in base units, value as typed) and a comparison adds model and GPU."""
    many = any(len(bs) > 1 for _, bs in points)  # a comparison at each point: label the rows
    return [{name: value, **({"model": (b.model, None), "gpu": (b.gpu, None)} if many else {}), **sweep_columns(b)}
            for value, bs in points for b in bs]


def _sweep_machine(fmt: str, command: str, name: str, keys: list[str], rows: list[dict], stream: TextIO) -> None:
    """The sweep's rows in base units: one JSON object ({command, sweep, rows}) or CSV lines."""
    if fmt == "json":
        stream.write(_sweep_json({"command": command, "sweep": name, "rows": rows}) + "\n")
        return
    import csv

    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(keys)
    writer.writerows([["" if row[k] is None else row[k] for k in keys] for row in rows])


_FLAT = (str, int, float, bool, type(None))


def _sweep_json(data: dict) -> str:
    """json.dumps(data, indent=2, allow_nan=False), written row by row: with an indent json runs its
    pure-Python encoder, five times slower than the C one that writes each flat row here."""
    import json

    rows = data["rows"]
    if list(data)[-1:] != ["rows"] or len(data) < 2 or not rows or \
            not all(row and all(type(v) in _FLAT for v in row.values()) for row in rows):
        return json.dumps(data, indent=2, allow_nan=False)
    head = json.dumps({k: v for k, v in data.items() if k != "rows"}, indent=2, allow_nan=False)[:-2]
    flat = json.JSONEncoder(separators=(",\n      ", ": "), allow_nan=False).encode  # a row, its items indented
    body = ",\n    ".join("{\n      " + flat(row)[1:-1] + "\n    }" for row in rows)
    return f'{head},\n  "rows": [\n    {body}\n  ]\n}}'


def render_sweep(name: str, points: list[tuple[tuple[Any, str], list[Breakdown]]], fmt: str,
                 out: TextIO | None = None) -> None:
    """One row per swept value (and per model and GPU compared): the value, then the key columns."""
    import sys

    stream = out or sys.stdout
    records = _sweep_records(name, points)
    command = next((b.command for _, bs in points for b in bs), "")
    lead = [name, "model", "gpu", *SWEEP_KEYS.get(command, ())]  # the same order whichever point has which columns
    keys = sorted(dict.fromkeys(k for rec in records for k in rec), key=lambda k: lead.index(k) if k in lead else len(lead))
    if fmt in ("json", "csv"):
        raw = [{k: rec.get(k, (None, None))[0] for k in keys} for rec in records]
        _sweep_machine(fmt, command, name, keys, raw, stream)
        return
    shown = [{k: str(rec[k][1]) if k == name else _display(*rec.get(k, ("", None))) for k in keys} for rec in records]
    models = {b.model for _, bs in points for b in bs}
    title = f"{next(b.command for _, bs in points for b in bs)} over {name}" + (f": {models.pop()}" if len(models) == 1 else "")
    (_markdown_listing if fmt == "markdown" else _table_listing)(title, shown, stream)
