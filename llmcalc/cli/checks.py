"""--check's failure: one stderr line a failing answer, then exit code 1 (common.ExitCode.CHECK_FAILED)."""

from __future__ import annotations

import typer

from .common import ExitCode


def sweep_point() -> str:
    """" at NAME=value" while a --sweep point runs (cli/sweep.py's current), else "": a failed check names it."""
    import sys

    sweep = sys.modules.get(f"{__package__}.sweep")
    return f" at {sweep.current}" if sweep is not None and sweep.current else ""


def fail_check(results: list, failed, why) -> None:
    """--check: one stderr line for each result ``failed`` flags, saying ``why`` (a CI log names the reason as
    plan's does), then exit 1."""
    bad = [b for b in results if failed(b)]
    for b in bad:
        where = f" on {b.gpu}" if getattr(b, "gpu", None) else ""
        typer.echo(f"check failed{sweep_point()}: {b.model}{where}: {why(b)}", err=True)
    if bad:
        raise typer.Exit(ExitCode.CHECK_FAILED)


def first_note(b, *starts: str, default: str = "") -> str:
    """The first of ``b``'s notes that starts with one of ``starts`` (a --check reason), else ``default``."""
    return next((n for n in b.notes if n.startswith(starts)), default)
