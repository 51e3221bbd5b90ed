"""--chart draws the answers as bars (one scale for all), --png writes them as an image."""

from __future__ import annotations

from .conftest import run, runner
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
