"""The `llmcalc` command line: thin shells over the core (parse options, load specs, compute, render).

Each command lives in its own module and registers itself on the shared app when imported.
"""

from __future__ import annotations

import sys

from . import flops, latency, limits, memory, mfu, params, presets  # noqa: F401 - registers the commands
from .common import ExitCode, app


# -- entry point ------------------------------------------------------------------------------
def _warn(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main() -> None:
    """Run the app (user errors are handled by common.Group: one line, exit code 2)."""
    import warnings

    warnings.showwarning = _warn
    try:
        app()
    except BrokenPipeError:  # `llmcalc ... | head`
        sys.exit(ExitCode.OK)
