"""The `llmcalc` command line: thin shells over the core (parse options, load specs, compute, render).

Each command lives in its own module and registers itself on the shared app when imported.
Only the module of the command being run is imported: Typer converts every registered command
into a click command on each call, and the memory and limits commands have ~35 options each.
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Iterable

import warnings

with warnings.catch_warnings():  # a library's deprecation notice at import must not stop the CLI (PYTHONWARNINGS=error)
    warnings.simplefilter("ignore", DeprecationWarning)
    from .common import ExitCode, app, one_line

# command name -> the module that registers it
COMMAND_MODULES = {"params": "params", "flops": "flops", "memory": "memory", "max-seq": "limits",
                   "max-batch": "limits", "mfu": "mfu", "latency": "latency", "presets": "presets",
                   "serve-plan": "serveplan", "plan": "plan"}


def load_commands(names: Iterable[str] | None = None) -> None:
    """Register the named commands (all of them when None or when none is known)."""
    wanted = {COMMAND_MODULES[n] for n in names or () if n in COMMAND_MODULES}
    for module in sorted(wanted or set(COMMAND_MODULES.values())):
        importlib.import_module(f"{__name__}.{module}")


# -- entry point ------------------------------------------------------------------------------
def _warn(message, category, filename, lineno, file=None, line=None) -> None:
    """Hold each warning (one line) until the command ends: an error makes them moot (common.UserError)."""
    from .common import PENDING_WARNINGS

    PENDING_WARNINGS.append(f"warning: {one_line(str(message))}")


def _flush_warnings() -> None:
    from .common import PENDING_WARNINGS

    for text in dict.fromkeys(PENDING_WARNINGS):
        _say(text)
    PENDING_WARNINGS.clear()


def _say(text: str) -> None:
    """One line on stderr; a stderr that cannot be written (2>/dev/full) is given up on in silence."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        _to_devnull(sys.stderr)


def _to_devnull(stream) -> None:
    """Point ``stream``'s descriptor at /dev/null, so the interpreter's last flush cannot fail again."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    except (OSError, ValueError, AttributeError):
        pass


# What an ASCII-only terminal gets instead of the tables' box drawing and the notes' symbols.
@functools.lru_cache(maxsize=1)
def _ascii_table() -> dict:
    """Box drawing and the chart's glyphs (chart.GLYPHS, one ASCII stand-in each) spelled in ASCII."""
    from ..chart import ASCII_GLYPHS, GLYPHS

    return str.maketrans({"│": "|", "─": "-", "━": "=", "┼": "+", "╇": "+", "·": "-", "…": "...", "×": "x", "≈": "~",
                          "—": "-", "–": "-", "≤": "<=", "≥": ">=", "→": "->", "²": "^2", "√": "sqrt", "Ψ": "Psi",
                          "μ": "u", **dict(zip(GLYPHS, ASCII_GLYPHS))})


class _Ascii:
    """A text stream that spells box drawing in ASCII and replaces what else it cannot encode."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(text.translate(_ascii_table()))

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _safe_stream(stream):
    """stdout/stderr as they can be written: a closed one becomes /dev/null (`llmcalc ... >&-`), one
    whose encoding cannot show the tables (PYTHONIOENCODING=ascii, a C locale) gets ASCII borders."""
    if stream is None:
        import os

        return open(os.devnull, "w", encoding="utf-8")
    try:
        "│━·█".encode(stream.encoding or "ascii")
        return stream
    except (UnicodeEncodeError, LookupError):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
        return _Ascii(stream)


def _quiet_broken_pipe() -> None:
    """The reader went away (`llmcalc presets | head -1`): end quietly with 0, as Unix tools do."""
    _to_devnull(sys.stdout)
    sys.exit(ExitCode.OK)


def _os_error(exc: OSError) -> None:
    """One line and exit 2 for what the system refused: stdout that cannot take the answer (a full
    disk, /dev/full, a descriptor opened read-only; no file name), or a file the core could not use."""
    from ..safeio import shown

    if exc.filename is None:
        _to_devnull(sys.stdout)
        _say(f"error: cannot write the output: {exc.strerror or exc}; write it somewhere else")
    else:
        _say(f"error: {shown(exc.filename)}: {exc.strerror or exc}")
    sys.exit(2)


def main() -> None:
    """Run the app (user errors are handled by common.Group: one line, exit code 2)."""
    sys.stdout, sys.stderr = _safe_stream(sys.stdout), _safe_stream(sys.stderr)
    warnings.showwarning = _warn
    # llmcalc's warnings are messages to the user, one line each: PYTHONWARNINGS=error or -W must not
    # turn them into tracebacks, and library deprecation notices are not the user's business.
    warnings.simplefilter("ignore")
    warnings.filterwarnings("default", category=UserWarning)
    if len(sys.argv) == 1:  # bare `llmcalc`: the help, on stdout, as --help gives it
        sys.argv.append("--help")
    first = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    load_commands([first] if first else None)
    try:
        try:
            app()
        finally:  # the answer is flushed here, where a failure can still be reported in one line
            _flush_warnings()
            sys.stdout.flush()
    except BrokenPipeError:  # `llmcalc ... | head`
        _quiet_broken_pipe()
    except OSError as exc:
        _os_error(exc)
    except SystemExit as done:  # click turns a broken pipe into exit 1 after swapping stdout for a pacifier
        if done.code == 1 and type(sys.stdout).__name__.lstrip("_") == "PacifyFlushWrapper":  # _ from click 8.2
            _quiet_broken_pipe()
        raise
