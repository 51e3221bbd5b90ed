"""`--sweep NAME=VALUES` on every command: the same question at several values of one option.

The command runs once per value with that option replaced (its own parsing and checks apply to
each), and the answers come back as one table of the command's key columns, one row per value
(and per model and GPU when comparing); JSON and CSV carry the same rows in base units.

VALUES is a comma list (``seq=1k,2k,4k``, ``gpu=a100-80gb,h100-sxm``) or a doubling range
``A..B`` (``seq=1k..128k`` is 1k, 2k, 4k ... 128k; ``batch=1..64``), read with the option's own
units (a length's k is 1024, a size's GB 10^9).
"""

from __future__ import annotations

from typing import Any, Callable

from ..spec import SpecError
from ..units import UnitError, setting_parser

MAX_POINTS = 10_000

collected: list | None = None  # while a sweep runs, common._emit hands the results here
current: str | None = None  # the point running, NAME=value (checks.sweep_point names it in a failed check)


def values(spec: str, param) -> list[str]:
    """The option values ``spec``'s right-hand side names (as the option would read them)."""
    _, _, text = spec.partition("=")
    if ".." not in text:
        items = [item.strip() for item in text.split(",") if item.strip()]
    else:
        low, _, high = text.partition("..")
        items = _doubling(_number(low, param), _number(high, param))
    if not items:
        raise SpecError(f"--sweep {spec!r} names no values; e.g. seq=1k,2k,4k or seq=1k..128k")
    if len(items) > MAX_POINTS:
        raise SpecError(f"--sweep {spec!r} has {len(items):,} points; at most {MAX_POINTS:,}")
    return items


def _number(text: str, param) -> int:
    name = param.name
    parse = setting_parser(name)
    if parse:
        value = parse(text)  # its own one-line error for what it cannot read
    elif text.strip().isdigit():
        value = int(text)
    else:
        raise SpecError(f"--sweep {name}: {text!r} is not a whole number for a range (A..B doubles from A to B)")
    if value < 1:
        raise SpecError(f"--sweep {name}: a range starts at 1 or more, got {text!r}")
    return int(value)


def _doubling(low: int, high: int) -> list[str]:
    if high < low:
        raise SpecError(f"--sweep range {low}..{high} runs backwards; give the smaller end first")
    out, value = [], low
    while value <= high and len(out) <= MAX_POINTS:
        out.append(str(value))
        value *= 2
    if int(out[-1]) != high:
        out.append(str(high))
    return out


def _base(value: str, param) -> Any:
    """The swept value in base units where the option has them (seq=8k -> 8192), else as typed."""
    try:
        return _number(value, param)
    except SpecError:
        return value


def option(spec: str, command) -> Any:
    """The command's click parameter that ``spec`` (NAME=VALUES) sweeps."""
    name = spec.partition("=")[0].strip().lstrip("-").replace("-", "_")
    params = {p.name: p for p in command.params if getattr(p, "param_type_name", "") == "option"}
    flag = "--" + name.replace("_", "-")  # by parameter name or by any of its flags (compile, max-num-batched-tokens)
    param = params.get(name) or next((p for p in params.values() if flag in p.opts), None)
    # how to answer, not the question (a sweep draws its own chart and has no one layout to explain)
    fixed = ("sweep", "json_", "csv_", "markdown", "check", "generic", "chart", "png", "explain")
    if "=" not in spec or param is None or param.name in fixed:
        sweepable = ", ".join(sorted(p.opts[0].lstrip("-") for n, p in params.items() if n not in fixed))
        raise SpecError(f"--sweep {spec!r}: give NAME=VALUES with NAME one of this command's options: {sweepable}")
    return param


def run(callback: Callable, check: Callable, kwargs: dict[str, Any], spec: str | None, command,
        chart: bool = False, png: str | None = None) -> None:
    """Call ``callback`` once per swept value (once without ``spec``), each value bounded by ``check``
    as the other options were on the way in; render the collected answers as one sweep table, a chart
    (--chart), and an image (--png)."""
    import gc

    import typer

    from .common import _fmt

    global collected, current
    param = option(spec, command) if spec else None
    if param is not None:
        from .common import unused

        given = kwargs.get(param.name)  # a required option (--model, latency's --gpu) is typed because it must be
        unused(param.opts[0], f"beside --sweep {spec.partition('=')[0].strip()}=..., whose values replace it",
               not param.required and given is not None and given != param.default)
    fmt = _fmt(kwargs.get("json_", False), kwargs.get("csv_", False), kwargs.get("markdown", False))
    points, failed = [], False
    call, convert = _converted(callback) if param else (callback, None)
    fixed = {k: convert(k, v) for k, v in kwargs.items()} if param else kwargs
    collecting = gc.isenabled()
    gc.disable()  # thousands of answers pile up until they are shown: the collector would walk them again and again
    try:
        for value in values(spec, param) if param else [None]:
            collected, current = [], f"{param.name.rstrip('_').replace('_', '-')}={value}" if param else None
            try:
                call(**({**fixed, param.name: convert(param.name, _typed(param, value, check))} if param else kwargs))
            except typer.Exit as done:
                failed |= done.exit_code == 1
            except (SpecError, UnitError) as exc:
                raise SpecError(f"--sweep {param.name}={value}: {exc}" if param else str(exc)) from None
            finally:
                results, collected, current = collected, None, None
            points.append(((_base(value, param), value) if param else (None, None), results))
        _show(points, param.name.rstrip("_") if param else None, fmt, chart, png)
    finally:
        if collecting:
            gc.enable()
    if failed:
        raise typer.Exit(1)


def _converted(callback: Callable) -> tuple[Callable, Callable]:
    """(the command behind ``callback``, typer's wrapper of it, called with its click context; how the
    wrapper converts an option's value): the wrapper converts every option (its choice enums) and fetches
    the context on each call, which a sweep does once. Where typer is not laid out as this expects
    (typer.main.get_callback's wrapper), the wrapper itself and values as they are."""
    import importlib

    import typer

    try:
        from typer.main import get_params_convertors_ctx_param_name_from_function as typer_view

        command = callback.__wrapped__
        _, convertors, context_name = typer_view(command)
        click = typer.Context.__mro__[1].__module__.rpartition(".")[0]  # click, or typer's own copy of it
        context = {context_name: importlib.import_module(f"{click}.globals").get_current_context()} if context_name else {}
    except (ImportError, AttributeError, TypeError, RuntimeError):
        return callback, lambda name, value: value
    return (lambda **kwargs: command(**kwargs, **context),
            lambda name, value: convertors[name](value) if name in convertors else value)


def _typed(param, value: str, check: Callable) -> Any:
    """``value`` as the option reads it, within the bounds every number an option takes is held to."""
    typed = param.type.convert(value, param, None)
    check(param.name, typed)
    return typed


def _show(points: list, name: str | None, fmt: str, chart: bool, png: str | None) -> None:
    import sys

    from .. import chart as charts
    from ..report import render
    from ..sweepreport import render_sweep

    many = any(len(results) > 1 for _, results in points)
    labelled = [(" ".join(filter(None, [f"{name}={typed}" if name else "",
                                        f"{b.model} @ {b.gpu}" if many and b.gpu else b.model if many else ""])), b)
                for (_, typed), results in points for b in results]
    if png:
        charts.write_png(labelled, png)
        print(f"wrote {png}", file=sys.stderr)
    if chart and fmt == "table":
        charts.render(labelled, sys.stdout)
    elif name:
        render_sweep(name, points, fmt)
    else:
        render([b for _, b in labelled], fmt)
