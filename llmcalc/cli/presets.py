"""`llmcalc presets` (list), `presets show`, `presets import`."""

from __future__ import annotations

from typing import Annotated, Optional

import sys

import typer

from .common import CsvOpt, GenericOpt, JsonOpt, MdOpt, _fmt, presets_app


@presets_app.callback()
def presets_list(
    ctx: typer.Context,
    json_: JsonOpt = False, csv_: CsvOpt = False, markdown: MdOpt = False,
) -> None:
    """List built-in and user presets with their key figures.

    Example: llmcalc presets
    """
    if ctx.invoked_subcommand:  # `presets --json show NAME`: the format flag serves the subcommand
        ctx.obj = {"json": json_}
        return
    from ..catalog import LISTING_UNITS, listing
    from ..report import render_listing

    render_listing(listing(), LISTING_UNITS, _fmt(json_, csv_, markdown))


@presets_app.command("show")
def presets_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A model or GPU preset name (or file).")],
    json_: JsonOpt = False,
) -> None:
    """Print one resolved preset, every field with its default filled in.

    Example: llmcalc presets show llama-3-8b
    """
    from ..catalog import show

    kind, fields = show(name)
    if json_ or (ctx.obj or {}).get("json"):
        import json

        print(json.dumps({"kind": kind, "name": fields["name"], "fields": fields}, indent=2, allow_nan=False))
        return
    from ..catalog import SHOW_UNITS
    from ..report import _display
    from ..texttable import Table, use_color

    table = Table([("field", "left"), ("value", "left")], title=f"{kind} {fields['name']}")
    for key, value in fields.items():
        if isinstance(value, dict):  # peak FLOP/s per dtype
            value = ", ".join(f"{k} {_display(v, 'FLOP/s')}" for k, v in value.items())
        table.add_row([key, _display(value, SHOW_UNITS.get(key))])
    sys.stdout.write(table.render(use_color(sys.stdout)))


@presets_app.command("import")
def presets_import(
    config: Annotated[str, typer.Argument(help="A config.json, model dir or cached hub id.")],
    name: Annotated[str, typer.Option("--name", help="Preset name to write.")],
    out: Annotated[Optional[str], typer.Option("--out", help="File to write (default: the user preset directory).")] = None,
    generic: GenericOpt = False,
    force: Annotated[bool, typer.Option("--force", help="Replace the file if it exists.")] = False,
) -> None:
    """Turn a Hugging Face config.json into a preset YAML file.

    Example: llmcalc presets import ./Llama-3.2-1B/config.json --name my-llama
    """
    from ..catalog import import_config
    from ..safeio import shown

    path = import_config(config, name, out, generic, force)
    print(f"wrote {shown(path)}", file=sys.stderr)
