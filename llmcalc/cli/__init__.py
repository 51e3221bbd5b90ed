"""The `llmcalc` command line: thin shells over the core (parse options, load specs, compute, render).

Each command lives in its own module and registers itself on the shared app when imported.
Only the module of the command being run is imported: Typer converts every registered command
into a click command on each call, and the memory and limits commands have ~35 options each.
"""

from __future__ import annotations

import importlib
import sys
from typing import Iterable

from .common import ExitCode, app

# command name -> the module that registers it
COMMAND_MODULES = {"params": "params", "flops": "flops", "memory": "memory", "max-seq": "limits",
                   "max-batch": "limits", "mfu": "mfu", "latency": "latency", "presets": "presets"}


def load_commands(names: Iterable[str] | None = None) -> None:
    """Register the named commands (all of them when None or when none is known)."""
    wanted = {COMMAND_MODULES[n] for n in names or () if n in COMMAND_MODULES}
    for module in sorted(wanted or set(COMMAND_MODULES.values())):
        importlib.import_module(f"{__name__}.{module}")


# -- entry point ------------------------------------------------------------------------------
def _warn(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main() -> None:
    """Run the app (user errors are handled by common.Group: one line, exit code 2)."""
    import warnings

    warnings.showwarning = _warn
    first = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    load_commands([first] if first else None)
    try:
        app()
    except BrokenPipeError:  # `llmcalc ... | head`
        sys.exit(ExitCode.OK)
