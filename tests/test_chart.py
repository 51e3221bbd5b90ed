"""--chart draws the answers as bars (one scale for all), --png writes them as an image."""

from __future__ import annotations

from .conftest import run, run_json, runner
from .test_hostile import _fails_cleanly


def _chart(*args: str, width: int = 80) -> list[str]:
    from llmcalc.cli import app

    result = runner().invoke(app, [*args, "--chart"], env={"COLUMNS": str(width), "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_a_sweep_charts_one_bar_per_point_on_one_scale():
    """The seed article's picture: the weights stay, the KV cache grows with the requests."""
    lines = _chart("memory", "--model", "llama-3.1-8b", "--gpu", "h100", "--mode", "infer", "--engine", "hf",
                   "--sweep", "batch=1,8,64")
    bars = [line for line in lines if line.startswith("batch=")]
    assert len(bars) == 3 and all(len(line) <= 80 for line in lines)
    kv = [line.count("▚") for line in bars]  # the KV cache's glyph (fifth part)
    weights = [line.count("█") for line in bars]
    assert kv[0] < kv[1] < kv[2] and max(weights) - min(weights) <= 1
    assert "█ weights" in lines[-1] or any("█ weights" in line for line in lines)


def test_latency_marks_each_phase_bound():
    lines = _chart("latency", "--model", "llama-2-70b", "--gpu", "a800", "--gpus", "8", "--prompt", "3000")
    bound = [line for line in lines if line.endswith("<- bound")]
    assert len(bound) == 2 and bound[0].startswith("prefill  compute") and "memory" in bound[1]
    assert all(len(line) <= 80 for line in lines)


def test_flops_and_params_chart_their_parts():
    assert any("attention" in line and "mlp" in line for line in _chart("flops", "--model", "gpt2"))
    assert any("embedding" in line for line in _chart("params", "--model", "gpt2", width=200))


def test_png(tmp_path):
    target = tmp_path / "chart.png"
    args = ("memory", "--model", "gpt2", "--sweep", "batch=1,2", "--png", str(target))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        _fails_cleanly(run(*args), "pip install 'llmcalc[plot]'")
        return
    result = run(*args)
    assert result.exit_code == 0 and "batch" in result.stdout  # the table as well
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _fails_cleanly(run("memory", "--model", "gpt2", "--png", str(tmp_path / "missing" / "x.png")), "--png")


def test_every_glyph_has_an_ascii_stand_in():
    """A stream that cannot encode blocks gets one ASCII character per chart part, never a '?'."""
    from llmcalc.chart import ASCII_GLYPHS, GLYPHS

    assert len(ASCII_GLYPHS) == len(GLYPHS) == len(set(ASCII_GLYPHS)) and ASCII_GLYPHS.isascii()


def test_the_params_bar_stacks_the_components_alone():
    """Llama-2-7B's parts sum to its total, 131.1 M + 2.147 B + 4.329 B + 266 K + 131.1 M = 6,738,415,616; the
    active row after the total (all of it, for a dense model) is read off the total, not one more part."""
    line = next(line for line in _chart("params", "--model", "llama-2-7b") if line.rstrip().endswith(" B"))
    assert line.rstrip().endswith("6.738 B") and "active" not in " ".join(_chart("params", "--model", "llama-2-7b"))
    both = _chart("params", "--model", "llama-2-7b,mixtral-8x7b")
    assert both[0].strip() == "params: llama-2-7b, mixtral-8x7b"
    assert any(line.rstrip().endswith("46.70 B") for line in both)


def test_rows_not_alive_at_the_peak_take_no_share_and_no_bar():
    """At the optimizer step's peak the gradients of a Mini-Sequence run are freed (README's max-seq example):
    they keep their value but leave the total, in the table (no share), the JSON (no share) and the bar."""
    data = run_json("max-seq", "--model", "llama-3.2-1b", "--gpu", "l40s", "--mini-seq", "4")
    rows = {row["name"]: row for row in data["rows"]}
    assert "not alive" in rows["gradients"]["note"] and "share" not in rows["gradients"]
    counted = sum(row["value"] for row in data["rows"] if "/" not in row["name"] and row.get("share")
                  and row["name"] != "total")
    assert counted == rows["total"]["value"] and rows["total"]["share"] == 1.0
    lines = _chart("max-seq", "--model", "llama-3.2-1b", "--gpu", "l40s", "--mini-seq", "4")
    assert "gradients" not in " ".join(lines) and any(line.rstrip().endswith("44.5 GiB") for line in lines)


def test_mfu_has_nothing_to_chart_and_says_so():
    import pytest

    from llmcalc.cli.common import UnusedOption

    with pytest.warns(UnusedOption, match="--chart has no effect with mfu: its answer is two ratios"):
        assert run("mfu", "--model", "llama-2-7b", "--gpu", "h100", "--step-time", "1", "--chart").exit_code == 0
