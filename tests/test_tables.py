"""Terminal tables (rich): they fit the width they are given, numbers stay whole, order is natural."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


from llmcalc.cli import app
from llmcalc.report import _display

from .conftest import run, run_json, runner

COMMANDS = [
    ["params", "--model", "llama-2-7b"],
    ["params", "--model", "llama-2-7b,mixtral-8x7b,deepseek-v3"],
    ["flops", "--model", "llama-3-8b", "--tokens", "15T", "--gpu", "h100", "--gpus", "1024"],
    ["memory", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--zero", "3", "--gpus", "8"],
    ["memory", "--model", "llama-3.1-8b", "--gpu", "h100", "--mode", "infer"],
    ["memory", "--model", "llama-3.1-8b", "--gpu", "h100,l40s", "--mode", "infer"],
    ["max-seq", "--model", "llama-3.2-1b", "--gpu", "l40s", "--mini-seq", "4"],
    ["max-batch", "--model", "llama-2-70b", "--gpu", "a800", "--gpus", "2", "--seq", "4000", "--dtype", "fp16"],
    ["mfu", "--model", "llama-3-70b", "--gpu", "h100", "--seq", "8192", "--tokens", "15T", "--gpu-hours", "6.4M"],
    ["latency", "--model", "llama-2-70b", "--gpu", "a800", "--gpus", "8", "--prompt", "3800"],
    ["serve-plan", "--model", "llama-3.1-8b", "--gpu", "h100", "--request-rate", "2", "--ttft-target", "1s"],
    ["plan", "--model", "llama-3-70b", "--cluster", "dgx-h100", "--nodes", "8", "--seq", "8k", "--tokens", "2T"],
    ["plan", "--model", "llama-3.1-405b", "--gpu", "h100", "--gpus", "8", "--seq", "8k"],
    ["presets"],
    ["presets", "show", "h100"],
]


def _table(args: list[str], width: int) -> str:
    result = runner().invoke(app, args, env={"COLUMNS": str(width), "NO_COLOR": "1"})
    assert result.exit_code in (0, 1), result.output
    return result.stdout


@pytest.mark.parametrize("width", [60, 80, 200])
@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:3]))
def test_tables_fit_the_width(args, width):
    lines = _table(args, width).splitlines()
    assert lines and max(len(line) for line in lines) <= width
    assert not any(line != line.rstrip() for line in lines)  # no padding trails a line


@pytest.mark.parametrize("args", [a for a in COMMANDS if a[0] not in ("presets", "serve-plan")],
                         ids=lambda a: " ".join(a[:3]))
def test_numbers_are_never_split(args):
    """Every row's value, as the table formats it, stands whole on one line even at the narrowest
    width a table is drawn at (a $COLUMNS of 0 or 1 is taken as 60). serve-plan draws its layouts as a
    listing (whole columns, report._fitting), not its rows."""
    data = json.loads(runner().invoke(app, [*args, "--json"]).stdout)
    results = data.get("results", [data])
    text = _table(args, 0).splitlines()
    assert text and max(len(line) for line in text) <= 60
    for result in results:
        for row in result["rows"]:
            shown = _display(row["value"], row["unit"])
            assert any(shown in line for line in text), (row["name"], shown)


def test_comparison_rows_stay_in_their_place_and_notes_say_whose():
    """Rows only Mixtral has (router, experts) sit among the MLP rows, not after the totals."""
    text = _table(["params", "--model", "llama-2-7b,mixtral-8x7b"], 200)
    names = [line.split("│")[0].strip() for line in text.splitlines() if "│" in line]
    assert names.index("mlp/experts") < names.index("mlp") < names.index("total")
    from llmcalc.report import _notes
    from llmcalc.breakdown import Breakdown

    a = Breakdown(command="x", title="", model="a", gpu=None, rows=(), notes=("shared", "only a"))
    b = Breakdown(command="x", title="", model="b", gpu=None, rows=(), notes=("shared",))
    assert _notes([a, b]) == ["shared", "a: only a"]


def test_version():
    from llmcalc import __version__

    result = runner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"llmcalc {__version__}\n"
    import re
    from pathlib import Path

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1) == __version__


def test_machine_formats_never_import_rich():
    code = ("import sys; sys.argv = ['llmcalc', 'memory', '--model', 'llama-2-7b', '--json']\n"
            "from llmcalc.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(any(m == 'rich' or m.startswith('rich.') for m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stderr.strip().splitlines()[-1] == "False"


def test_gpu_count_in_the_gpu_name():
    """`--gpu 8xh100` is `--gpu h100 --gpus 8`, for every GPU of a comparison; counts that disagree are refused."""
    from .test_hostile import _fails_cleanly

    data = run_json("memory", "--model", "llama-2-7b", "--gpu", "8xh100,8xa100-80gb", "--zero", "3")
    assert [(r["gpu"], r["inputs"]["gpus"]) for r in data["results"]] == [("h100-sxm", 8), ("a100-80gb", 8)]
    assert run_json("flops", "--model", "gpt2", "--gpu=4xh100", "--tokens", "1T")["inputs"]["gpus"] == 4
    _fails_cleanly(run("memory", "--model", "gpt2", "--gpu", "8xh100,4xa100"), "several GPU counts")
    _fails_cleanly(run("memory", "--model", "gpt2", "--gpu", "8xh100", "--gpus", "4"), "--gpus says 4")


def test_a_hub_id_not_in_the_cache_falls_back_to_its_preset(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.warns(UserWarning, match="using the built-in preset llama-2-7b, made from that repository"):
        assert run_json("params", "--model", "meta-llama/Llama-2-7b-hf")["model"] == "llama-2-7b"
    with pytest.warns(UserWarning, match="preset llama-3.1-8b"):
        assert run_json("params", "--model", "meta-llama/Llama-3.1-8B")["model"] == "llama-3.1-8b"
    assert run("params", "--model", "nobody/nothing").exit_code == 2


def test_caption_shows_lists_as_names():
    text = _table(["memory", "--model", "llama-2-7b", "--finetune", "lora", "--lora-targets", "q,v,o"], 400)
    assert "lora_targets q,v,o" in text and "['q'" not in text and "True" not in text


def test_help_says_what_a_value_may_be():
    text = _table(["memory", "--help"], 120)
    for metavar in ("--seq <tokens: 8k>", "--gpu-memory <bytes: 80GB>", "--gpu [Nx]<gpu>[,...]", "--sweep <name=a,b|A..B>"):
        assert metavar in text, metavar
    assert "--ttft-target <time: 650ms>" in _table(["latency", "--help"], 120)


def test_shell_completion_offers_preset_names():
    env = {"_LLMCALC_COMPLETE": "complete_bash", "COMP_WORDS": "llmcalc memory --gpu h100,a10", "COMP_CWORD": "3"}
    import os
    from pathlib import Path

    script = Path(sys.executable).with_name("llmcalc")  # completion keys on the program's own name
    if not script.exists():
        pytest.skip("llmcalc is not installed as a script beside this Python")
    done = subprocess.run([str(script)], env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    offered = done.stdout.split()
    assert "h100,a100-80gb" in offered and all(o.startswith("h100,a10") for o in offered)


def test_a_table_without_totals_has_no_share_column():
    assert "share" not in _table(["mfu", "--model", "gpt2", "--gpu", "h100", "--step-time", "1"], 120).splitlines()[1]
    assert "share" in _table(["params", "--model", "gpt2"], 120).splitlines()[1]


def test_a_long_summary_text_wraps_among_the_notes_on_a_narrow_terminal():
    """The best layout in words (with full recomputation, 40-odd characters) would widen the value column until
    the notes beside it read a word a line at 80 columns: there it goes in the note column; at 200 it stays a
    value."""
    args = ["plan", "--model", "llama-3.1-405b", "--gpu", "h100", "--gpus", "128", "--seq", "8k",
            "--recompute", "full", "--top", "1"]
    layout = run_json(*args)["summary"]["layout"]
    assert len(layout) > 30
    def layout_row(width: int) -> list[str]:  # the breakdown's summary line after "evaluated"
        lines = _table(args, width).splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith("evaluated "))
        return [cell.strip() for cell in lines[at + 1].split("│")]

    assert layout_row(80)[0] == "layout" and layout_row(80)[1] == "" and layout_row(80)[-1] in layout
    notes = [line.split("│")[-1].strip() for line in _table(args, 80).splitlines() if line.startswith("compute ")]
    assert len(notes[0]) >= 30  # the first words of compute's note, not a fragment
    assert layout_row(200)[:2] == ["layout", layout]
    sizes = [line for line in _table(["params", "--model", "llama-2-7b"], 60).splitlines() if "_bytes " in line]
    assert sizes and all(line.split("│")[1].strip() for line in sizes)  # numbers stay values, however narrow
