"""--help with each command's options grouped in panels (Model, Runtime, Hardware ... Output).

Typer draws ``rich_help_panel`` panels only through typer.rich_utils, which needs the app's
``rich_markup_mode``; that mode also boxes every error in several lines of rich, bypassing
common.UserError's one line. So the app keeps plain mode, and its commands (App, Command,
PanelGroup) override click's own hook for the options part of a help, ``format_options``: the
options are grouped by their ``rich_help_panel`` and each group drawn as a rich panel as wide as
click's help text (the terminal's width less 2, at most 78), into the help click prints on stdout.
Errors never pass here. rich is imported only to draw a help; this module itself is light (every
run loads it for the panel names and metavars).
"""
from __future__ import annotations

import enum
import inspect
import re
from typing import Callable

import typer
from typer.core import TyperCommand, TyperGroup

# The panels, in the order a help shows them; an option names its own in typer.Option(rich_help_panel=...).
ARGUMENTS, MODEL, RUNTIME, HARDWARE, PARALLELISM, PRECISION = (
    "Arguments", "Model", "Runtime", "Hardware", "Parallelism", "Precision")
TRAINING, FINETUNING, INFERENCE, TARGETS, OUTPUT, COMMANDS = (
    "Training", "Fine-tuning", "Inference", "Targets", "Output", "Commands")
PANELS = (ARGUMENTS, MODEL, RUNTIME, HARDWARE, PARALLELISM, PRECISION, TRAINING, FINETUNING, INFERENCE,
          TARGETS, OUTPUT, COMMANDS)
UNGROUPED = "Options"  # an option that names no panel (the top level's: --version, completion)

NAMES_WIDTH = 30  # option names wider than this (with a metavar) take a line of their own, as click's

# What each value may be, as --help shows it (click's own metavars say only <str> or <int>).
METAVARS = {
    "model": "<preset|file|hub-id>[,...]", "gpu": "[Nx]<gpu>[,...]",
    "seq": "<tokens: 8k>", "prompt": "<tokens: 4000>", "output": "<tokens: 256>", "minimum": "<tokens: 32k>",
    "prefill_chunk": "<tokens: 8k>", "gpu_memory": "<bytes: 80GB>", "reserve": "<bytes: 1GiB>",
    "ttft_target": "<time: 650ms>", "tpot_target": "<time: 50ms>", "step_time": "<time: 1.2s>",
    "tokens": "<count: 15T>", "tokens_per_s": "<count: 3.5k>", "gpu_hours": "<count: 6.4M>",
    "sweep": "<name=a,b|A..B>", "png": "<file.png>", "out": "<file.yaml>", "gpu_util": "<fraction: 0.9>",
    "efficiency": "<fraction: 0.4>", "lora_dropout": "<fraction: 0.05>",
    "max_num_batched_tokens": "<tokens: 8k>", "step_overhead": "<time: 50us>", "request_overhead": "<time: 5ms>",
    "expert_overhead": "<time: 0.4ms>", "tp_overlap_sms": "<SMs: 16>", "recompute_modules": "<modules: core_attn,...>",
    "measured_ttft": "<time: 406ms>", "measured_itl": "<time: 18.6ms>", "calibrate": "<result.json>",
    "prefill_efficiency": "<fraction: 0.65>", "decode_efficiency": "<fraction: 0.9>", "request_rate": "<req/s: 10>",
    "concurrency": "<clients: 16>", "gpu_price": "<$/h: 2.5|gpu=2.5,...>", "max_gpus": "<gpus: 64>",
    "cluster": "[Nx]<cluster>", "global_batch": "<sequences: 1024>", "batch_tokens": "<tokens: 4M>",
    "zero_stages": "<stages: 0,1,3>", "recomputes": "<none,selective,full>", "min_mfu": "<fraction: 0.4>",
    "max_days": "<days: 30>",
}
# The rest say their type (or their choices), in the same words under every typer and click release.
TYPE_METAVARS = {"int": "<int>", "integer": "<int>", "int range": "<int>", "integer range": "<int>", "float": "<float>",
                 "float range": "<float>", "str": "<str>", "text": "<str>"}


def by_mode(train: object, infer: object) -> str:
    """A default that depends on --mode, as help states it."""
    return f"{train} in train mode, {infer} in infer"


def describe(command) -> None:
    """Metavars that say what a value may be, and shell completion of preset names for --model/--gpu."""
    for param in command.params:
        if param.param_type_name == "option" and not param.is_flag:  # an argument's name is its metavar
            param.metavar = _metavar(param) or param.metavar
        if param.name in ("model", "gpu", "cluster"):
            param._custom_shell_complete = _complete_presets({"model": "models", "gpu": "gpus"}.get(param.name, "clusters"))


def _metavar(param) -> str | None:
    """What ``param`` takes: METAVARS' words, else <a|b|c> for choices or <int>, <float>, <str>."""
    if param.name in METAVARS:
        return METAVARS[param.name]
    choices = getattr(param.type, "choices", None)
    if choices:
        return "<" + "|".join(str(getattr(choice, "value", choice)) for choice in choices) + ">"
    return TYPE_METAVARS.get(getattr(param.type, "name", ""))


def _complete_presets(kind: str) -> Callable:
    def complete(ctx, param, incomplete: str) -> list[str]:
        from ..presets import catalog

        head, _, last = incomplete.rpartition(",")  # a,b compares: complete the last name
        prefix = head + "," if head else ""
        return [prefix + name for name in sorted(catalog(kind)[0]) if name.startswith(last.lower())]

    return complete


# -- what a help says of each option ---------------------------------------------------------
def panel_of(param, ctx) -> str:
    """The panel ``param`` is drawn in: its own, Output for --help, else Arguments or UNGROUPED."""
    named = getattr(param, "rich_help_panel", None)
    if named:
        return named
    if set(param.opts) & set(ctx.help_option_names):  # click names it help, or _click_default_help (8.5)
        return OUTPUT
    return ARGUMENTS if param.param_type_name == "argument" else UNGROUPED


def default_shown(param, ctx) -> str | None:
    """The default as help states it: the option's own words (show_default, for a default another
    option decides), else its value; None for an off flag or an option that is simply left out."""
    stated = getattr(param, "show_default", None)
    if isinstance(stated, str):
        return stated
    if stated is False:
        return None
    value = param.get_default(ctx, call=False)
    if value is None or callable(value):
        return None
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):  # --overlap/--no-overlap says which; a lone flag is off unless given
        pair = getattr(param, "secondary_opts", ())
        return (param.opts if value else pair)[0].lstrip("-") if pair else None
    return str(value)


def _range(kind) -> str | None:
    """An IntRange's or FloatRange's bounds, as click writes them: x>=1, 0<=x<=3."""
    low, high = getattr(kind, "min", None), getattr(kind, "max", None)
    below = "<" if getattr(kind, "min_open", False) else "<="
    above = "<" if getattr(kind, "max_open", False) else "<="
    if high is None:
        return None if low is None else f"x{below.replace('<', '>')}{low}"
    return f"x{above}{high}" if low is None else f"{low}{below}x{above}{high}"


def help_text(param, ctx) -> str:
    """The option's help on one line, then [default: ...; range; required]."""
    text = " ".join((getattr(param, "help", None) or "").split())
    default = default_shown(param, ctx)
    extras = [f"default: {default}"] if default else []
    extras += [r for r in [_range(param.type)] if r] + (["required"] if param.required else [])
    return f"{text}  [{'; '.join(extras)}]".strip() if extras else text


def panels(command, ctx) -> dict[str, list[tuple[str, str]]]:
    """Panel name -> (names with metavar, help) of each option, in PANELS order; a group's commands last."""
    found: dict[str, list[tuple[str, str]]] = {}
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is not None:
            found.setdefault(panel_of(param, ctx), []).append((record[0], help_text(param, ctx)))
    for name in getattr(command, "list_commands", lambda ctx: [])(ctx):
        sub = command.get_command(ctx, name)
        if sub is not None and not sub.hidden:
            about = inspect.cleandoc(sub.short_help or sub.help or "").split("\n\n")[0]
            found.setdefault(COMMANDS, []).append((name, " ".join(about.split())))
    rank = {name: i for i, name in enumerate(PANELS)}
    return {name: found[name] for name in sorted(found, key=lambda n: rank.get(n, -1))}


# -- drawing ---------------------------------------------------------------------------------
# patterns, compiled (and cached by re) when help is drawn, not on every command
OPTION = r"(?<![\w-])--?[A-Za-z][\w-]*"
EXTRAS = r"\[(?:default: |required|[^\]\s]*x[<>])[^\]]*\]"


def _wrap_names(names: str, width: int) -> list[str]:
    """Option names and metavar on lines of ``width``, a long list of choices broken after a |."""
    if len(names) <= width:
        return [names]
    start = names.find("<")
    indent = " " * (start + 1 if 0 < start < width // 2 else 4)
    lines, line = [], ""
    for piece in re.findall(r"[^|\s]*[|\s]|[^|\s]+$", names):
        if line.strip() and len(line + piece.rstrip()) > width:
            lines.append(line.rstrip())
            line = indent
        line += piece
    return lines + [line.rstrip()]


def layout(rows: list[tuple[str, str]], width: int, column: int) -> list[tuple[str, str]]:
    """(names part, help part) of each line: help wrapped at words beside the names, or below
    names too wide for ``column``."""
    import textwrap

    lines = []
    for names, text in rows:
        helps = textwrap.wrap(text, max(width - column, 20), break_on_hyphens=False) or [""]
        if len(names) + 2 <= column:
            lines += [(names.ljust(column) if helps[0] else names, helps[0])]
            lines += [(" " * column, line) for line in helps[1:]]
        else:
            lines += [(line, "") for line in _wrap_names(names, width)]
            lines += [(" " * column, line) for line in helps if line]
    return lines


def draw(found: dict[str, list[tuple[str, str]]], width: int) -> str:
    """The panels, ``width`` wide, as text for stdout: box drawing (ASCII where stdout cannot encode
    it), colour only on a terminal and never under NO_COLOR (report.console decides, as for tables)."""
    import sys

    from rich.box import ROUNDED
    from rich.panel import Panel
    from rich.text import Text

    from ..report import console

    out = console(sys.stdout)
    out.width = width
    inner = width - 4  # a border and a space each side
    fitting = [len(names) for rows in found.values() for names, _ in rows if len(names) + 2 <= NAMES_WIDTH]
    column = min(max(fitting, default=0) + 2, NAMES_WIDTH)
    with out.capture() as captured:
        for name, rows in found.items():
            body = Text("\n".join(n + h for n, h in layout(rows, inner, column)), overflow="fold")
            body.highlight_regex(OPTION, "bold cyan")
            body.highlight_regex(EXTRAS, "dim")
            out.print(Panel(body, title=name, title_align="left", box=ROUNDED, border_style="dim",
                            padding=(0, 1), width=width))
    return captured.get()


class HelpPanels:
    """Draws a command's options (and a group's commands) in panels; plain click help if drawing
    them fails on a typer or click that lacks what it uses."""

    def format_options(self, ctx: typer.Context, formatter) -> None:
        try:
            text = draw(panels(self, ctx), formatter.width)
        except (AttributeError, TypeError, ImportError):
            super().format_options(ctx, formatter)
            return
        formatter.write_paragraph()
        formatter.write(text)


class Command(HelpPanels, TyperCommand):
    """A command whose --help groups its options in panels."""


class PanelGroup(HelpPanels, TyperGroup):
    """A command group (`presets`) whose --help groups its options and commands in panels."""

    def resolve_command(self, ctx: typer.Context, args: list[str]):
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            describe(command)
        return name, command, rest


class App(typer.Typer):
    """A Typer app whose commands are Command: options in panels in their --help."""

    def command(self, name: str | None = None, *, cls=None, **kwargs):
        return super().command(name, cls=cls or Command, **kwargs)
