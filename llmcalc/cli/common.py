"""What every command shares: the Typer apps, option aliases, choice enums and small helpers."""

import enum
import functools
import sys
from typing import Annotated, Callable, Optional, Sequence

import typer
from typer.core import TyperGroup

from ..breakdown import Breakdown
from ..dtypes import DTYPES
from ..params import OPTIMIZERS
from ..safeio import one_line
from ..spec import SpecError, default_seq as context_seq
from ..units import MAX_QUANTITY, UnitError, counted, parse_length
from .helpfmt import (App, HARDWARE, HelpPanels, MODEL, OUTPUT, PRECISION, PanelGroup, PARALLELISM, RUNTIME,
                      describe)


_UsageError = typer.BadParameter.__mro__[1]  # click's UsageError (typer vendors click privately)


PENDING_WARNINGS: list[str] = []  # warnings of this run, printed when it ends (cli.main)
EXPLAIN = {"on": False}  # --explain of this run: _emit renders each row's formula too


class UserError(typer.BadParameter):
    """Bad input: one line on stderr, exit code 2 (BadParameter's), never a traceback; the run's
    warnings are dropped, since the command they were about did not run."""

    def show(self, file=None) -> None:
        PENDING_WARNINGS.clear()
        # user text in a message (a file or preset name) is escaped: it cannot split or repaint the line
        typer.echo(f"error: {one_line(self.message)}", err=True)


# --sweep on every command (cli/sweep.py runs it)
SWEEP_HELP = ("Run once per value of one option and tabulate the key results: NAME=a,b,c or NAME=A..B "
              "(doubling), e.g. seq=1k..128k, gpus=8,16,32, gpu=a100-80gb,h100-sxm.")


def _choice_hint(exc) -> str:
    """A value an option's fixed choices refused (click's Choice: "'bf15' is not one of ..."): "; did you mean" the
    nearest choice, or ""."""
    import re

    from ..spec import nearest

    choices = getattr(getattr(getattr(exc, "param", None), "type", None), "choices", None)
    given = re.search(r"'([^']*)' is not one of", exc.format_message())
    return nearest(given.group(1), choices) if choices and given else ""


class Group(HelpPanels, TyperGroup):
    """The top-level group: one-line errors for every command (the core's SpecError/UnitError and
    click's own parse errors become UserError), and every number an option takes kept finite and
    below MAX_QUANTITY before any command computes with it."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        counted_args = _gpu_counts(args)
        if counted_args is not args and args:  # `--gpu 2xh100` to a command that picks the count itself (serve-plan)
            command = self.get_command(ctx, args[0])
            takes = {opt for p in getattr(command, "params", ()) for opt in getattr(p, "opts", ())}
            if command is not None and "--gpu" in takes and "--gpus" not in takes:
                bound = " (--max-gpus bounds it)" if "--max-gpus" in takes else ""
                raise UserError(f"{args[0]} chooses the GPU count itself{bound}: give the GPU alone, e.g. --gpu h100")
        args = counted_args
        try:
            return super().parse_args(ctx, args)
        except _UsageError as exc:  # an unknown option before the command: `llmcalc --model x`
            if type(exc).__name__ == "NoArgsIsHelpError":
                raise
            raise UserError(f"{exc.format_message()} (`llmcalc --help` lists the commands and their options)") from None

    def resolve_command(self, ctx: typer.Context, args: list[str]):
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None and command.callback is not None and not hasattr(command.callback, "bounded"):
            if not hasattr(command, "commands"):  # every command, not a group, takes --sweep (cli/sweep.py)
                from typer.core import TyperOption

                command.params += [
                    TyperOption(param_decls=["--sweep"], type=str, default=None, help=SWEEP_HELP, rich_help_panel=OUTPUT),
                    TyperOption(param_decls=["--chart"], is_flag=True, default=False, rich_help_panel=OUTPUT,
                                help="Draw the answer (each sweep point) as bars in the terminal instead of the table."),
                    TyperOption(param_decls=["--png"], type=str, default=None, rich_help_panel=OUTPUT,
                                help="Also write the chart to this image file (needs the extra: pip install 'llmcalc[plot]')."),
                    TyperOption(param_decls=["--explain"], is_flag=True, default=False, rich_help_panel=OUTPUT,
                                help="Show how each row is computed: its formula with the numbers in, and its source.")]
            describe(command)
            command.callback = _bounded(command.callback, command)
        return name, command, rest

    def invoke(self, ctx: typer.Context):
        try:
            self._refuse_empty_values(ctx)
            return super().invoke(ctx)
        except UserError:
            raise
        except (SpecError, UnitError) as exc:
            raise UserError(str(exc)) from None
        except _UsageError as exc:  # click's own parse errors: one line too, with the command named
            where = f"{exc.ctx.command_path}: " if getattr(exc, "ctx", None) else ""
            hint = _choice_hint(exc)
            raise UserError(where + (exc.format_message().rstrip(".") + hint if hint else exc.format_message())) from None

    def _refuse_empty_values(self, ctx: typer.Context) -> None:
        """`--seq ''` is a mistake, never a request for the default: refuse any option given an empty value
        (the options of a command group's subcommands too: `presets import --out ''`), and a second --sweep."""
        args = [*getattr(ctx, "_protected_args", ()), *ctx.args]
        command = self.get_command(ctx, args[0]) if args else None
        commands = [command, *getattr(command, "commands", {}).values()]
        valued = {opt for c in commands for p in getattr(c, "params", ()) if not getattr(p, "is_flag", True)
                  and getattr(p, "param_type_name", "") == "option" for opt in p.opts}
        for i, arg in enumerate(args[1:], 1):
            name, eq, value = arg.partition("=")
            given = value if eq else (args[i + 1] if i + 1 < len(args) else None)
            if name in valued and given is not None and not given.strip():
                raise UserError(f"{name} is empty; give it a value or leave the option out")
        sweeps = [arg for arg in args if arg == "--sweep" or arg.startswith("--sweep=")]
        if len(sweeps) > 1:  # click would keep the last in silence; a reader may expect a grid
            raise UserError("--sweep is given twice; a run sweeps one option: run it once for each value of the "
                            "other (e.g. a shell loop)")


def _gpu_counts(args: list[str]) -> list[str]:
    """`--gpu 8xh100` is `--gpu h100 --gpus 8` (the count a node or a cloud instance is named by)."""
    out, counts, i = [], set(), 0
    while i < len(args):
        arg = args[i]
        flag, value, step = (arg, args[i + 1], 2) if arg in ("--gpu", "-g") and i + 1 < len(args) else \
            ("--gpu", arg[6:], 1) if arg.startswith("--gpu=") else (None, None, 1)
        if flag is None:
            out.append(arg)
        else:
            names = []
            for item in value.split(","):
                count, name = counted(item)
                counts.update([count] if count is not None else [])
                names.append(name)
            out += [flag, ",".join(names)]
        i += step
    if not counts:
        return args
    if len(counts) > 1:
        raise UserError(f"--gpu names several GPU counts ({', '.join(map(str, sorted(counts)))}); compare one count at a time")
    count = counts.pop()
    given = [args[j + 1] for j, a in enumerate(args[:-1]) if a == "--gpus"] + [a[7:] for a in args if a.startswith("--gpus=")]
    if any(g != str(count) for g in given):
        raise UserError(f"--gpu {count}x... says {count} GPUs but --gpus says {given[0]}; give one of them")
    return out + ([] if given else ["--gpus", str(count)])


# commands whose answer has no parts for --chart to stack, and why
UNCHARTED = {"serve-plan": "its answer is a listing", "mfu": "its answer is two ratios"}


def _bounded(callback: Callable, command) -> Callable:
    """``callback`` refusing a number no sizing question has: NaN, infinite or beyond MAX_QUANTITY
    (`--batch 1e400`, a 400-digit integer) would overflow a float or print noise as digits; with
    --sweep, run once per swept value (cli/sweep.py)."""
    flags = {p.name: p.opts[0] for p in command.params if p.opts}

    def check(name: str, value) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not abs(value) <= MAX_QUANTITY:
            shown = f"a {len(str(abs(value)))}-digit number" if isinstance(value, int) else repr(value)
            raise UserError(f"{flags.get(name, name)} is {shown}; give a finite value of at most 10^15")

    @functools.wraps(callback)
    def checked(**kwargs):
        for name, value in kwargs.items():
            check(name, value)
        spec, chart, png = kwargs.pop("sweep", None), kwargs.pop("chart", False), kwargs.pop("png", None)
        EXPLAIN["on"] = kwargs.pop("explain", False)
        if command.name in UNCHARTED:
            for flag, given in (("--chart", chart), ("--png", png)):
                unused(flag, f"with {command.name}: {UNCHARTED[command.name]}, with no parts to draw", bool(given))
            chart, png = False, None
        if EXPLAIN["on"] and (spec or chart):
            unused("--explain", "with --sweep or --chart (explain one point: leave them out)", True)
        if spec is None and not chart and not png:
            return callback(**kwargs)
        from .sweep import run

        return run(callback, check, kwargs, spec, command, chart, png)

    checked.bounded = True
    return checked


app = App(
    cls=Group,
    name="llmcalc",
    help="Size transformer LLMs: parameters, FLOPs, memory, MFU, latency and limits.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion; preset names complete (helpfmt.describe)
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain errors: rich's boxed ones would bypass UserError's one line (help: helpfmt)
)


def _show_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"llmcalc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_show_version, is_eager=True,
                                                    help="Print llmcalc's version and exit.", rich_help_panel=OUTPUT)] = None,
) -> None:
    """Size transformer LLMs: parameters, FLOPs, memory per GPU, MFU, latency and limits."""


presets_app = App(cls=PanelGroup, help="List, show and import model and GPU presets.", invoke_without_command=True)
app.add_typer(presets_app, name="presets")


class ExitCode(enum.IntEnum):
    OK = 0
    CHECK_FAILED = 1  # answered, and a --check condition failed
    # 2, bad input, is click's usage-error code: UserError (a BadParameter) exits with it


def choices(name: str, values) -> type[enum.Enum]:
    """A Typer choice enum whose members are the core's own names, so the two cannot drift."""
    return enum.Enum(name, {v: v for v in values}, type=str)


Dtype = choices("Dtype", DTYPES)
Optimizer = choices("Optimizer", OPTIMIZERS)


# -- shared options (defined once, reused by every command) -----------------------------------
ModelOpt = Annotated[str, typer.Option("--model", "-m", rich_help_panel=MODEL, help="Preset name, YAML file, config.json, model dir or cached hub id; a,b compares.")]
GpuOpt = Annotated[Optional[str], typer.Option("--gpu", "-g", rich_help_panel=HARDWARE, help="GPU preset name or YAML file; a,b compares.")]
GpusOpt = Annotated[int, typer.Option("--gpus", rich_help_panel=HARDWARE, help="Number of GPUs.")]
SeqOpt = Annotated[Optional[str], typer.Option("--seq", "-s", rich_help_panel=RUNTIME, show_default="the model's context, at most 8k", help="Sequence length in tokens (8k = 8192).")]
BatchOpt = Annotated[int, typer.Option("--batch", "-b", rich_help_panel=RUNTIME, help="Sequences per step (or concurrent requests).")]
DtypeOpt = Annotated[Dtype, typer.Option("--dtype", rich_help_panel=PRECISION, help="Weights and compute dtype.")]


def __getattr__(name: str):
    """Choices made on first use (`from .common import Formula`), so that a command loads only the core
    modules that hold its own: Formula, Attention, Recompute and their options (llmcalc.flops) and
    Engine (the engines memory and latency model, for memory, latency and serve-plan)."""
    if name == "Engine":
        from ..memory.engines import ENGINES

        globals()[name] = choices("Engine", ENGINES)
        return globals()[name]
    if name not in ("Formula", "Attention", "Recompute", "FormulaOpt", "AttentionOpt", "RecomputeOpt"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ..flops import ATTENTION, FORMULAS, RECOMPUTE

    Formula, Attention, Recompute = (choices("Formula", FORMULAS), choices("Attention", ATTENTION),
                                     choices("Recompute", RECOMPUTE))
    globals().update(
        Formula=Formula, Attention=Attention, Recompute=Recompute,
        FormulaOpt=Annotated[Formula, typer.Option("--formula", rich_help_panel=MODEL, help="detailed: component sum; palm: 6N + 12LHQT; 6nd: 6N (2N forward).")],
        AttentionOpt=Annotated[Attention, typer.Option("--attention", rich_help_panel=MODEL, help="Count the full s x s attention product (notebook, PaLM) or only the causal half.")],
        RecomputeOpt=Annotated[Recompute, typer.Option("--recompute", rich_help_panel=RUNTIME, help="Activation recomputation: extra forward work.")])
    return globals()[name]


EffOpt = Annotated[Optional[float], typer.Option("--efficiency", rich_help_panel=HARDWARE, show_default="0.4, a typical large-run MFU", help="Fraction of peak compute the step's FLOPs run at, recomputation's included (HFU; the MFU without recomputation).")]
TokensOpt = Annotated[Optional[str], typer.Option("--tokens", rich_help_panel=RUNTIME, help="Training token budget (15T, 300e9).")]
GenericOpt = Annotated[bool, typer.Option("--generic", rich_help_panel=MODEL, help="Best-effort mapping of an unknown config.json model_type.")]
TpOpt = Annotated[Optional[int], typer.Option("--tp", rich_help_panel=PARALLELISM, show_default="all --gpus", help="Tensor-parallel degree.")]
KvDtypeOpt = Annotated[Optional[Dtype], typer.Option("--kv-dtype", rich_help_panel=PRECISION, show_default="--dtype when a 16/32-bit float, else bf16", help="KV-cache dtype.")]
CheckOpt = Annotated[bool, typer.Option("--check", rich_help_panel=OUTPUT, help="Exit 1 when it does not fit or a target is not reachable.")]
JsonOpt = Annotated[bool, typer.Option("--json", rich_help_panel=OUTPUT, help="One JSON object on stdout (base units).")]
CsvOpt = Annotated[bool, typer.Option("--csv", rich_help_panel=OUTPUT, help="CSV rows on stdout (base units).")]
MdOpt = Annotated[bool, typer.Option("--markdown", rich_help_panel=OUTPUT, help="A Markdown table on stdout.")]


def _fmt(json_: bool, csv_: bool, markdown: bool) -> str:
    chosen = [name for name, on in (("json", json_), ("csv", csv_), ("markdown", markdown)) if on]
    if len(chosen) > 1:
        raise SpecError(f"choose one output format, not {' and '.join('--' + c for c in chosen)}")
    return chosen[0] if chosen else "table"


def _split(text: str, what: str | None = None) -> list[str]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if what and not parts:
        raise SpecError(f"--{what} names nothing; give a preset name or a file (a,b compares)")
    return parts


def _models(text: str, generic: bool = False) -> list:
    return [_model(name, generic) for name in _split(text, "model")]


def _gpus(text: str | None) -> list:
    return [_gpu(name) for name in _split(text, "gpu")] if text is not None else [None]


@functools.lru_cache(maxsize=256)  # specs are frozen: a --sweep loads each model and GPU once
def _model(name: str, generic: bool):
    from ..presets import load_model

    return load_model(name, generic=generic)


@functools.lru_cache(maxsize=256)
def _gpu(name: str):
    from ..presets import load_gpu

    return load_gpu(name)


class UnusedOption(UserWarning):
    """An option that the rest of the command line leaves without effect."""


class Implausible(UserWarning):
    """A value computed as asked that the model or the hardware would not run as it is (one stderr line)."""


def unused(flag: str, reason: str, given: bool) -> None:
    """Say on stderr that ``flag`` changes nothing here (silently ignoring it would mislead)."""
    if given:
        import warnings

        warnings.warn(f"{flag} has no effect {reason}", UnusedOption, stacklevel=2)


def warn_formula_options(formula: "enum.Enum", attention: "enum.Enum") -> None:
    """--attention decides only the detailed component sum; palm's 12LHQT and 6N have rules of their own."""
    unused("--attention", f"with --formula {formula.value} (only --formula detailed counts attention by it)",
           attention.value != "full" and formula.value != "detailed")


def require_gpus(text: str | None) -> list:
    """GPUs for a command that cannot answer without one."""
    if not text:
        raise SpecError("this command needs --gpu (a preset name such as h100, or a YAML file)")
    return _gpus(text)


def default_seq(model, seq: str | None) -> int:
    """--seq, else the model's context length capped at 8k tokens (stated in the inputs)."""
    if not seq:
        return context_seq(model)
    return within_context(model, parse_length(seq), "--seq")


def within_context(model, tokens: int, what: str, engine: str | None = None) -> int:
    """``tokens`` of context (--seq, or --prompt + --output); beyond the model's context it is computed
    as asked with one warning (the model was not trained that long; a serving ``engine`` that caps the context
    refuses it unless told otherwise), beyond 2^31 tokens refused."""
    from ..units import MAX_LENGTH

    if tokens > MAX_LENGTH:
        raise SpecError(f"{what} comes to {tokens:,} tokens, more than {MAX_LENGTH:,}; give a real context length")
    if tokens > model.max_position_embeddings:
        import warnings

        warnings.warn(f"{what} {tokens:,} is longer than {model.name}'s {model.max_position_embeddings:,}-token "
                      f"context: {model.past_context}{_engine_caps(engine)}; the numbers assume it runs that long "
                      "anyway", Implausible, stacklevel=2)
    return tokens


def _engine_caps(engine: str | None) -> str:
    """What a serving engine does with a context past the model's (memory/engines Engine.caps_context)."""
    from ..memory.engines import ENGINES, NAMES

    if engine is None or engine not in ENGINES or not ENGINES[engine].caps_context:
        return ""
    return f"; {NAMES.get(engine, engine)} refuses a longer max_model_len unless told to allow it (as max-seq caps it)"


def sweeping() -> bool:
    """Whether this run is one point of a --sweep, whose answers cli/sweep.py collects and renders together
    (it is imported before the first point: without it no sweep runs, and nothing need import it)."""
    sweep = sys.modules.get(f"{__package__}.sweep")
    return sweep is not None and sweep.collected is not None


def _emit(results: Sequence[Breakdown], fmt: str) -> None:
    if sweeping():
        from .sweep import collected

        collected.extend(results)
        return
    from ..report import render

    render(results, fmt, explain=EXPLAIN["on"])


def _each(models: list, gpus: list, compute: Callable) -> list[Breakdown]:
    """Compare side by side: every model x every GPU."""
    return [compute(m, g) for m in models for g in gpus]

