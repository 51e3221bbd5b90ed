"""Shared test helpers: run the real CLI in-process and read its JSON contract."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from llmcalc.cli import app, load_commands

load_commands()  # every command registered, as `llmcalc --help` sees them


@pytest.fixture(autouse=True)
def _isolated_presets(tmp_path, monkeypatch):
    """No test sees the developer's own presets: user dirs point into an empty tmp dir."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("LLMCALC_PRESETS", raising=False)
    from llmcalc import presets
    from llmcalc.cli import common

    caches = (presets.catalog, common._model, common._gpu)
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()


def runner() -> CliRunner:
    """A CliRunner keeping stderr apart from stdout (click 8.2+ always does; 8.1 needs mix_stderr=False)."""
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def run(*args: str):
    """Invoke `llmcalc ARGS`; returns the click Result (exit_code, stdout, stderr)."""
    return runner().invoke(app, list(args))


def run_json(*args: str) -> dict:
    result = run(*args, "--json")
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def value(data: dict, name: str):
    """A named number from the JSON contract: summary first, then rows (as the acceptance check)."""
    if name in data["summary"]:
        return data["summary"][name]
    for row in data["rows"]:
        if row["name"] == name:
            return row["value"]
    raise KeyError(name)
