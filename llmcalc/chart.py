"""`--chart` and `--png FILE`: the answers as bars, in the terminal (rich) or as an image (matplotlib).

Memory, parameters and FLOPs draw one stacked bar per answer (per sweep point, per model and GPU
compared), its parts the top-level components, all on one scale so the bars compare: the seed
article's "weights against the KV cache as requests grow" is `memory --mode infer --sweep
batch=1..64 --chart`. Latency draws each phase's compute, memory and communication times side by
side, the longest (the roofline's bound) marked. Glyphs tell the parts apart without colour.
"""

from __future__ import annotations

from typing import Sequence, TextIO

from .breakdown import Breakdown

GLYPHS = "█▓▒░▚▞▙▟"
ASCII_GLYPHS = "#%=:*+@&"  # the same parts where the stream cannot encode blocks (cli._Ascii)
STYLES = ("cyan", "green", "yellow", "red", "magenta", "blue", "bright_black", "white")
PHASES = ("prefill", "decode")


def parts(b: Breakdown) -> list[tuple[str, float, str]]:
    """(name, value, unit) of the parts one bar stacks: the components of the total (memory, params),
    of the forward pass (flops, backward and recomputation beside it) or of the step time (plan)."""
    if b.command == "flops":
        forward = [(r.name, r.value, r.unit) for r in b.rows if r.total == "forward" and r.value > 0
                   and not r.name.startswith(("attention/", "mlp/"))]
        return forward + [(r.name, r.value, r.unit) for r in b.rows if r.name in ("backward", "recompute") and r.value > 0]
    if b.command == "plan":  # the best layout's step time, by part
        return [(r.name, r.value, r.unit) for r in b.rows if r.total == "step_time" and r.value > 0]
    shown = []
    for r in b.rows:  # the total's parts come before it; a row after it is read off it (params' active)
        if r.name == "total":
            return shown
        if "/" not in r.name and r.total == "total" and r.value > 0:
            shown.append((r.name, r.value, r.unit))
    return shown


def split_bar(b: Breakdown, width: int = 60, line: int = 80) -> list:
    """The bar under a memory table: ``b``'s parts as shares of its total, and a legend with the shares."""
    from rich.text import Text

    total = b.value("total")
    bar = Text()
    for i, (name, value, _) in enumerate(parts(b)):
        bar.append(GLYPHS[i % len(GLYPHS)] * round(width * value / total), STYLES[i % len(STYLES)])
    return [bar, *_legend([f"{name} {value / total:.0%}" for name, value, _ in parts(b)], line)]


def _legend(labels: Sequence[str], width: int) -> list:
    """"glyph label" entries in the parts' glyphs and colours, packed into lines of ``width``, never
    splitting an entry."""
    from rich.text import Text

    lines = [Text()]
    for i, label in enumerate(labels):
        entry = f"{GLYPHS[i % len(GLYPHS)]} {label}"
        if lines[-1] and len(lines[-1]) + 2 + len(entry) > width:
            lines.append(Text())
        lines[-1].append(("  " if lines[-1] else "") + entry, STYLES[i % len(STYLES)])
    return lines


def phases(b: Breakdown) -> list[tuple[str, list[tuple[str, float]]]]:
    """Latency: each phase's (bound name, [(compute|memory|communication, seconds)])."""
    return [(phase, [(r.name.split("/", 1)[1], r.value) for r in b.rows if r.name.startswith(phase + "/")])
            for phase in PHASES]


def render(labelled: Sequence[tuple[str, Breakdown]], stream: TextIO) -> None:
    """The chart in the terminal, at its width."""
    from rich.text import Text

    from .report import console, print_table

    target = console(stream)
    lines = (_roofline_lines if labelled and labelled[0][1].command == "latency" else _stacked_lines)(labelled, target.width)
    print_table(Text("\n").join(lines), stream, _title(labelled), target=target)


def _title(labelled: Sequence[tuple[str, Breakdown]]) -> str:
    first = labelled[0][1]
    if len(labelled) == 1:
        return first.title or first.command
    swept = {label.partition("=")[0] for label, _ in labelled if "=" in label.split(" ")[0]}
    if len(swept) == 1 and all("=" in label.split(" ")[0] for label, _ in labelled):  # a sweep: by its option
        several = any(" " in label for label, _ in labelled)  # each point for several models or GPUs
        return f"{first.command if several else first.title or first.command}, by {swept.pop()}"
    return f"{first.command}: {', '.join(label for label, _ in labelled)}"  # a comparison: of what it compares


def _stacked_lines(labelled: Sequence[tuple[str, Breakdown]], width: int) -> list:
    from rich.text import Text

    from .units import fmt_value

    names = list(dict.fromkeys(name for _, b in labelled for name, _, _ in parts(b)))
    totals = [sum(value for _, value, _ in parts(b)) for _, b in labelled]
    top = max(totals, default=0) or 1
    label_width = max((len(label) for label, _ in labelled), default=0)
    shown = [fmt_value(total, parts(b)[0][2]) if parts(b) else "" for total, (_, b) in zip(totals, labelled)]
    bar_width = max(10, width - label_width - max(map(len, shown), default=0) - 3)
    lines = []
    for (label, b), total, value in zip(labelled, totals, shown):
        line = Text(label.ljust(label_width) + " ")
        for name, part, _ in parts(b):
            i = names.index(name) % len(GLYPHS)
            line.append(GLYPHS[i] * round(bar_width * part / top), STYLES[i])
        line.append(" " + value)
        lines.append(line)
    return lines + _legend(names, width)


def _roofline_lines(labelled: Sequence[tuple[str, Breakdown]], width: int) -> list:
    from rich.text import Text

    from .units import fmt_seconds

    top = max((t for _, b in labelled for _, times in phases(b) for _, t in times), default=0) or 1
    bar_width = max(10, width - 45)  # phase, kind, the time and "<- bound" beside the bar
    lines = []
    for label, b in labelled:
        if label:
            lines.append(Text(label, style="bold"))
        for phase, times in phases(b):
            bound = max(times, key=lambda x: x[1])[0] if times else ""
            for i, (kind, seconds) in enumerate(times):
                line = Text(f"{phase if i == 0 else '':8} {kind:13} ")
                line.append(GLYPHS[i] * max(1 if seconds else 0, round(bar_width * seconds / top)), STYLES[i])
                line.append(f" {fmt_seconds(seconds)}" + ("  <- bound" if kind == bound else ""))
                lines.append(line)
    return lines


def write_png(labelled: Sequence[tuple[str, Breakdown]], path: str) -> None:
    """The same chart as an image (matplotlib, the optional extra llmcalc[plot])."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from .spec import SpecError

        raise SpecError("--png needs matplotlib: pip install 'llmcalc[plot]'") from None
    figure, axes = plt.subplots(figsize=(9, 1.2 + 0.45 * max(len(labelled), 2)))
    if labelled and labelled[0][1].command == "latency":
        _png_roofline(axes, labelled)
    else:
        _png_stacked(axes, labelled)
    axes.set_title(_title(labelled))
    figure.tight_layout()
    try:
        figure.savefig(path)
    except (OSError, ValueError) as exc:
        from .spec import SpecError

        raise SpecError(f"--png {path}: {getattr(exc, 'strerror', None) or exc}") from None
    finally:
        plt.close(figure)


def _png_stacked(axes, labelled: Sequence[tuple[str, Breakdown]]) -> None:
    names = list(dict.fromkeys(name for _, b in labelled for name, _, _ in parts(b)))
    unit = next((u for _, b in labelled for _, _, u in parts(b)), "")
    scale, suffix = (2**30, "GiB") if unit == "byte" else (1, unit)
    labels = [label or b.model or b.command for label, b in labelled]
    left = [0.0] * len(labelled)
    for name in names:
        widths = [next((v for n, v, _ in parts(b) if n == name), 0.0) / scale for _, b in labelled]
        axes.barh(labels, widths, left=left, label=name)
        left = [a + w for a, w in zip(left, widths)]
    axes.set_xlabel(suffix)
    axes.legend(fontsize="small", ncol=min(4, len(names)))


def _png_roofline(axes, labelled: Sequence[tuple[str, Breakdown]]) -> None:
    rows = [(f"{label} {phase} {kind}".strip(), seconds) for label, b in labelled for phase, times in phases(b)
            for kind, seconds in times]
    axes.barh([name for name, _ in rows], [seconds * 1e3 for _, seconds in rows])
    axes.set_xlabel("ms (roofline time per phase; the longest is the bound)")
