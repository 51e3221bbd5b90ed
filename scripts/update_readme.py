#!/usr/bin/env python3
"""Re-run the README's console examples and paste their current output under them.

A console block's lines starting with "$ llmcalc" are run (in-process, as the tests run the
CLI); "$ echo $?" prints the previous exit code. The presets listing is cut to its first rows.
A sentence's "`llmcalc ... --json` gives `{'key': value, ...}`" is mended too: the summary's
values of the keys it names.
tests/test_readme.py fails when the README and the tool disagree; this script mends the README.

Usage: python scripts/update_readme.py [--check]
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"```console\n(.*?)```", re.S)
LISTING_ROWS = 6  # `llmcalc presets` is long; the README shows its head
INLINE = re.compile(r"`(llmcalc [^`]*--json)` gives(\s+)`(\{[^`]*\})`")


def run(command: str) -> tuple[str, int]:
    """Run ``llmcalc ...`` at 100 columns (or ``COLUMNS=80 llmcalc ...`` at the width it names)."""
    from typer.testing import CliRunner

    from llmcalc.cli import app, load_commands

    load_commands()
    words = shlex.split(command)
    env = {"COLUMNS": "100", "NO_COLOR": "1"}
    while "=" in words[0]:
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    try:  # stdout only: click 8.2+ keeps stderr apart by itself, 8.1 when asked
        cli = CliRunner(mix_stderr=False)
    except TypeError:
        cli = CliRunner()
    result = cli.invoke(app, words[1:], env=env)
    return result.stdout, int(result.exit_code)


def render_block(body: str) -> str:
    if not body.startswith(("$ llmcalc", "$ COLUMNS=")):
        return body
    out, code = [], 0
    for line in body.splitlines():
        if line.startswith(("$ llmcalc", "$ COLUMNS=")):
            text, code = run(line[2:])
            lines = text.rstrip("\n").splitlines()
            if line.strip() == "$ llmcalc presets":
                lines = lines[:3 + LISTING_ROWS] + ["..."]
            out += [line, *lines]
        elif line.startswith("$ echo $?"):
            out += [line, str(code)]
    return "\n".join(out) + "\n"


def render_inline(match: re.Match) -> str:
    import json

    command, space, shown = match.groups()
    summary = json.loads(run(command)[0])["summary"]
    keys = re.findall(r"'(\w+)'", shown)
    return f"`{command}` gives{space}`{ {key: summary[key] for key in keys} }`"


def updated(text: str) -> str:
    text = BLOCK.sub(lambda m: "```console\n" + render_block(m.group(1)) + "```", text)
    return INLINE.sub(render_inline, text)


def main() -> None:
    text = README.read_text()
    new = updated(text)
    if "--check" in sys.argv[1:]:
        sys.exit(0 if new == text else 1)
    README.write_text(new)


if __name__ == "__main__":
    main()
