"""The `llmcalc` command line: thin shells over the core (parse options, load specs, compute, render).

Each command lives in its own module and registers itself on the shared app when imported.
"""

from __future__ import annotations

import sys

from ..spec import SpecError
from ..units import UnitError
from . import flops, params, presets  # noqa: F401 - registers the commands
from .common import ExitCode, app


# -- entry point ------------------------------------------------------------------------------
def _warn(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main() -> None:
    """Run the app; user errors become one line on stderr and exit code 2, never a traceback."""
    import warnings

    warnings.showwarning = _warn
    try:
        app()
    except (SpecError, UnitError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(ExitCode.BAD_INPUT)
    except BrokenPipeError:  # `llmcalc ... | head`
        sys.exit(ExitCode.OK)
