"""--help: every option in a named panel, defaults that another option decides stated, 80 columns,
and errors still one line (the panels are drawn for help only: cli/helpfmt.py)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import typer.main

from llmcalc.cli import app
from llmcalc.cli.helpfmt import OUTPUT, PANELS

from .conftest import runner


def _commands() -> list[tuple[list[str], object]]:
    """(path, click command) of every command and group below `llmcalc`."""
    found = []

    def walk(group, prefix):
        for name, command in group.commands.items():
            found.append((prefix + [name], command))
            walk(command, prefix + [name]) if hasattr(command, "commands") else None

    walk(typer.main.get_command(app), [])
    return found


COMMANDS = _commands()
IDS = [" ".join(path) for path, _ in COMMANDS]
# Options that are absent unless given (no default to state): an optional GPU, targets, measurements.
ABSENT_UNLESS_GIVEN = {"gpu", "tokens", "ttft_target", "tpot_target", "minimum", "prompt", "offload", "keep_16bit",
                       "step_time", "tokens_per_s", "gpu_hours"}


def _help(path: list[str], width: int = 80) -> str:
    result = runner().invoke(app, [*path, "--help"], env={"COLUMNS": str(width), "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.stdout


def _panels(text: str) -> dict[str, list[str]]:
    """Panel title -> the flags listed in it (from the names column of each row)."""
    panels: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        title = re.match(r"[╭+]-?─? (.+?) [─-]", line)
        if title:
            current = panels.setdefault(title.group(1), [])
        elif current is not None and re.match(r"[│|] -", line):
            names = line[2:].split("  ")[0]
            current += re.findall(r"(?<![\w-])--?[a-z][\w-]*", names)
    return panels


def _option_help(text: str, flag: str) -> str:
    """The help of ``flag``'s row (and its wrapped lines), on one line."""
    rows, taking = [], False
    for line in text.splitlines():
        body = line.strip("│|╰╯─ ")
        if re.match(r"[│|] -", line):
            taking = re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", body.split("  ")[0]) is not None
        elif not line.startswith(("│", "|")):
            taking = False
        if taking:
            rows.append(body)
    return " ".join(" ".join(rows).split())


@pytest.mark.parametrize("path,command", COMMANDS, ids=IDS)
def test_every_option_sits_in_a_named_panel(path, command):
    """A new option without rich_help_panel lands in no named panel, and this fails."""
    panels = _panels(_help(path))
    assert panels and set(panels) <= set(PANELS), sorted(panels)
    listed = [flag for flags in panels.values() for flag in flags]
    for param in command.params:
        if param.param_type_name == "option" and not param.hidden:
            assert param.opts[0] in listed, (param.opts[0], panels)
    assert "--help" in panels[OUTPUT]
    if len(path) == 1 and not hasattr(command, "commands"):  # added to every command by common.Group
        assert {"--sweep", "--chart", "--png"} <= set(panels[OUTPUT])


def test_memory_help_shows_its_panels_in_order():
    panels = _panels(_help(["memory"]))
    assert list(panels) == ["Model", "Runtime", "Hardware", "Parallelism", "Precision", "Training", "Fine-tuning",
                            "Inference", "Output"]
    assert panels["Runtime"][:3] == ["--mode", "-b", "--batch"]
    assert "--tp" in panels["Parallelism"] and "--engine" in panels["Inference"] and "--json" in panels["Output"]


@pytest.mark.parametrize("path,command", COMMANDS, ids=IDS)
def test_every_default_is_stated(path, command):
    """An option left unset takes a default from somewhere: help says which (show_default), unless
    the option is simply absent until given."""
    text = _help(path)
    for param in command.params:
        if param.param_type_name != "option" or param.is_flag or param.required or param.name in ABSENT_UNLESS_GIVEN:
            continue
        assert "[default: " in _option_help(text, param.opts[0]), (path, param.opts[0])


@pytest.mark.parametrize("flag,says", [
    ("--attention-impl", "[default: sdpa in train mode, flash in infer]"),
    ("--reserve", "[default: 0.67GiB in train mode, 0 in infer]"),
    ("--tp", "[default: 1 in train mode, the GPUs --pp x --cp x --dp leave in infer]"),
    ("--gpu-util", "[default: 1.0 in train mode, the engine's in infer: vllm 0.9 (0.92 from 0.20)"),
    ("--engine-version", "[default: vllm 0.7.3, sglang 0.5.5"),
    ("--loss", "[default: full; chunked under litgpt, torchtune; fused under unsloth]"),
    ("--recompute", "[default: none; full under torchtune, unsloth; full for QLoRA under hf, peft]"),
    ("--optimizer", "[default: adamw; adamw-8bit under unsloth; paged-adamw for QLoRA under litgpt]"),
    ("--mode", "[default: train]"),
    ("--zero", "[default: 0; 3 with --framework fsdp; 0<=x<=3]"),
])
def test_defaults_that_depend_on_another_option_are_stated(flag, says):
    assert says in _option_help(_help(["memory"]), flag)


def test_a_default_follows_the_command():
    assert "[default: infer]" in _option_help(_help(["max-batch"]), "--mode")
    assert "[default: all --gpus]" in _option_help(_help(["latency"]), "--tp")
    assert "[default: 0.4, a typical large-run MFU]" in _option_help(_help(["flops"]), "--efficiency")


@pytest.mark.parametrize("path", [[]] + [path for path, _ in COMMANDS], ids=lambda p: " ".join(p) or "llmcalc")
def test_help_fits_80_columns(path):
    """click's CliRunner draws help 80 wide whatever $COLUMNS says; the panels take the same width."""
    lines = _help(path).splitlines()
    assert max(len(line) for line in lines) == 80
    assert not any(line != line.rstrip() for line in lines)
    assert "\x1b[" not in "\n".join(lines)  # no colour off a terminal


@pytest.mark.parametrize("width,widest", [(60, 58), (40, 50), (200, 78)])
def test_help_follows_the_terminal_up_to_80_columns(width, widest):
    """As click's own help text: the terminal's width ($COLUMNS) less 2, at most 78, at least 50."""
    import os

    done = subprocess.run([sys.executable, "-m", "llmcalc", "memory", "--help"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": str(width), "NO_COLOR": "1"})
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and max(len(line) for line in lines) == widest
    assert _panels(done.stdout)["Parallelism"][0] == "--tp"


def test_help_without_panels_falls_back_to_plain(monkeypatch):
    """Where drawing the panels fails (a typer or click without what it uses), plain click help."""
    from llmcalc.cli import helpfmt

    def missing(found):
        raise AttributeError("gone")

    monkeypatch.setattr(helpfmt, "draw", missing)
    text = _help(["memory"])
    assert "Options:" in text and "--attention-impl" in text and "╭" not in text


@pytest.mark.parametrize("args", [["memory", "--model", "gpt2", "--mode", "bogus"], ["memory", "--modle", "gpt2"],
                                  ["--bogus"], ["presets", "import", "--help-me"]])
def test_errors_stay_one_line(args):
    result = runner().invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "╭" not in result.stderr and not result.stdout


def _modules_after(*args: str) -> set[str]:
    code = (f"import sys; sys.argv = ['llmcalc', *{list(args)!r}]\n"
            "from llmcalc.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(' '.join(sorted(sys.modules)), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return set(done.stderr.strip().splitlines()[-1].split())


def test_only_help_draws_panels():
    """Help draws with rich; a table run does not load typer's rich help for it (its markdown and
    traceback renderers), and --json loads no rich at all (test_tables)."""
    assert "rich.panel" in _modules_after("params", "--help")
    table = _modules_after("params", "--model", "gpt2")
    assert "rich.table" in table and "typer.rich_utils" not in table
