"""`llmcalc presets` (list), `presets show`, `presets import`."""

from typing import Annotated, Optional

import sys

import typer

from .common import CsvOpt, GenericOpt, JsonOpt, MdOpt, _fmt, presets_app
from .helpfmt import OUTPUT


@presets_app.callback()
def presets_list(
    ctx: typer.Context,
    json_: JsonOpt = False, csv_: CsvOpt = False, markdown: MdOpt = False,
) -> None:
    """List built-in and user presets with their key figures: models, GPUs, clusters.

    Example: llmcalc presets
    """
    if ctx.invoked_subcommand:  # `presets --json show NAME`: the format flags serve the subcommand
        ctx.obj = {"json": json_, "csv": csv_, "markdown": markdown}
        return
    from ..catalog import LISTING_UNITS, listing
    from ..report import render_listing

    render_listing(listing(), LISTING_UNITS, _fmt(json_, csv_, markdown))


def _format(ctx: typer.Context, json_: bool, csv_: bool = False, markdown: bool = False) -> str:
    """The output format asked of a subcommand, or of `presets` before it (`presets --json show h100`)."""
    given = ctx.obj or {}
    return _fmt(json_ or given.get("json", False), csv_ or given.get("csv", False),
                markdown or given.get("markdown", False))


@presets_app.command("show")
def presets_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A model, GPU or cluster preset name (or file).")],
    json_: JsonOpt = False, csv_: CsvOpt = False, markdown: MdOpt = False,
) -> None:
    """Print one resolved preset, every field with its default filled in.

    Example: llmcalc presets show llama-3-8b
    """
    from ..catalog import SHOW_DECIMALS, SHOW_UNITS, show

    fmt = _format(ctx, json_, csv_, markdown)
    kind, fields = show(name)
    if fmt == "json":
        import json

        print(json.dumps({"kind": kind, "name": fields["name"], "fields": fields}, indent=2, allow_nan=False))
        return
    if fmt == "csv":  # raw values, as every CSV
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["kind", "field", "value", "unit"])
        for key, value in fields.items():
            for sub, v in (value.items() if isinstance(value, dict) else [(None, value)]):
                writer.writerow([kind, f"{key}.{sub}" if sub else key, v, SHOW_UNITS.get(key, "")])
        return
    from ..report import _display

    rows = [(key, ", ".join(f"{k} {_display(v, SHOW_UNITS.get(key))}" for k, v in value.items()) if isinstance(value, dict)
             else f"{value:.{SHOW_DECIMALS[key]}f}" if key in SHOW_DECIMALS and value is not None
             else _display(value, SHOW_UNITS.get(key))) for key, value in fields.items()]
    if fmt == "markdown":
        from ..report import _markdown_listing

        _markdown_listing(f"{kind} {fields['name']}", [{"field": k, "value": v} for k, v in rows], sys.stdout)
        return
    from ..report import new_table, print_table

    table = new_table([("field", "name"), ("value", "note")])
    for row in rows:
        table.add_row(*row)
    print_table(table, sys.stdout, f"{kind} {fields['name']}")


@presets_app.command("import")
def presets_import(
    ctx: typer.Context,
    config: Annotated[str, typer.Argument(help="A config.json, model dir or cached hub id.")],
    name: Annotated[str, typer.Option("--name", rich_help_panel=OUTPUT, help="Preset name to write.")],
    out: Annotated[Optional[str], typer.Option("--out", rich_help_panel=OUTPUT, show_default="the user preset directory",
                                               help="File to write.")] = None,
    generic: GenericOpt = False,
    force: Annotated[bool, typer.Option("--force", rich_help_panel=OUTPUT, help="Replace the file if it exists.")] = False,
) -> None:
    """Turn a Hugging Face config.json into a preset YAML file.

    Example: llmcalc presets import ./Llama-3.2-1B/config.json --name my-llama
    """
    from ..catalog import import_config
    from ..safeio import shown

    path = import_config(config, name, out, generic, force)
    if (ctx.obj or {}).get("json"):  # `presets --json import`: what was written, as JSON on stdout
        import json

        print(json.dumps({"kind": "model", "name": name, "path": str(path)}, indent=2))
        return
    print(f"wrote {shown(path)}", file=sys.stderr)
