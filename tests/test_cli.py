"""The real CLI: output formats, the JSON contract, errors (exit 2, one line), presets."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from llmcalc.cli import app

from .conftest import run, run_json, value

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("fmt", ["", "--json", "--csv", "--markdown"])
@pytest.mark.parametrize("command", [["params", "--model", "gpt2"],
                                     ["flops", "--model", "gpt2", "--seq", "1024"]])
def test_every_format_renders_the_same_rows(command, fmt):
    result = run(*command, *([fmt] if fmt else []))
    assert result.exit_code == 0, result.output
    out = result.stdout
    if fmt == "--json":
        assert json.loads(out)["command"] == command[0]
    elif fmt == "--csv":
        rows = list(csv.DictReader(io.StringIO(out)))
        assert any(r["name"] == "total" and float(r["value"]) > 0 for r in rows)
    else:
        assert "total" in out


def test_json_is_one_object_with_the_contract_keys():
    data = run_json("params", "--model", "llama-2-7b")
    assert {"command", "model", "gpu", "inputs", "rows", "summary"} <= set(data)
    assert data["inputs"]["dtype"] == "bf16"  # defaults are resolved and reported
    assert all(set(r) >= {"name", "value", "unit"} for r in data["rows"])


def test_comparison_lists_render_side_by_side():
    result = run("params", "--model", "gpt2,gpt2-medium")
    assert result.exit_code == 0
    assert "gpt2-medium" in result.stdout
    data = run_json("params", "--model", "gpt2,gpt2-medium")
    assert [r["model"] for r in data["results"]] == ["gpt2", "gpt2-medium"]


def test_names_are_case_insensitive_with_aliases():
    assert value(run_json("params", "--model", "GPT2"), "total") == 124_439_808
    data = run_json("flops", "--model", "gpt2", "--gpu", "H100", "--tokens", "1e9")
    assert data["gpu"] == "h100-sxm"


def _error(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_unknown_preset_suggests_nearest():
    assert re.search(r"unknown model 'llama-2-7'.*llama-2-7b", _error("params", "--model", "llama-2-7"))
    assert "h100" in _error("flops", "--model", "gpt2", "--gpu", "h10", "--tokens", "1e9")


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("hidden_size: 64\nnum_hidden_layers: [1,\n")
    assert re.search(r"bad\.yaml:\d+: malformed YAML", _error("params", "--model", str(bad)))


def _model_yaml(tmp_path, **override) -> str:
    fields = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=100,
                  intermediate_size=256, max_position_embeddings=128, mlp_type="gated",
                  norm_type="rmsnorm", position_embedding="rotary", tie_word_embeddings=False,
                  attention_bias=False, attention_out_bias=False, mlp_bias=False)
    fields.update(override)
    path = tmp_path / "tiny.yaml"
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in fields.items()))
    return str(path)


def test_user_model_file_counts(tmp_path):
    # hand count: embed 100x64, 2 x (4 x 64x64 attention + 3 x 64x256 MLP + 2 norms), final norm, head
    expected = 6400 + 2 * (4 * 64 * 64 + 3 * 64 * 256 + 2 * 64) + 64 + 6400
    assert value(run_json("params", "--model", _model_yaml(tmp_path)), "total") == expected


@pytest.mark.parametrize("override,message", [
    ({"num_attention_heads": 5}, "does not divide"),
    ({"hidden_size": -64}, "positive"),
    ({"num_key_value_heads": 3}, "must divide"),
    ({"mlp_type": "swish"}, "mlp_type must be one of"),
    ({"hidden_sise": 64}, "did you mean hidden_size"),
    ({"num_hidden_layers": 2.5}, "whole number"),
])
def test_impossible_models_are_rejected(tmp_path, override, message):
    assert message in _error("params", "--model", _model_yaml(tmp_path, **override))


def test_missing_field_is_named(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("hidden_size: 64\n")
    assert "missing" in _error("params", "--model", str(path))


@pytest.mark.parametrize("args,message", [
    (["params", "--model", ","], "names nothing"),
    (["memory", "--model", "llama-3-8b", "--gpu", ","], "names nothing"),
    (["memory", "--model", "llama-3-8b", "--dtype", "foo"], "Invalid value for '--dtype'"),
    (["memory", "--model", "llama-3-8b", "--tp", "0"], "--tp must be at least 1"),
    (["memory", "--model", "llama-3-8b", "--gpus", "3", "--tp", "2"], "not divisible"),
    (["flops", "--model", "gpt2", "--seq", "1e400"], "too large"),
    (["flops", "--model", "gpt2", "--tokens", "1e400"], "too large"),
    (["params"], "Missing option '--model'"),
    (["frobnicate"], "No such command"),
])
def test_every_bad_input_is_one_line(args, message):
    assert message in _error(*args)


def test_non_finite_gpu_figures_are_rejected(tmp_path):
    gpu = tmp_path / "g.yaml"
    gpu.write_text("memory_gib: .inf\nmemory_bandwidth_tb_s: 1\ntflops: {bf16: 100}\n")
    assert "memory_gib is inf; give a finite number" in _error("flops", "--model", "gpt2", "--gpu", str(gpu), "--tokens", "1e9")
    gpu.write_text("memory_gib: 80\nmemory_bandwidth_tb_s: 1\ntflops: {bf16: .nan}\n")
    assert "tflops.bf16 is nan; give a finite number" in _error("flops", "--model", "gpt2", "--gpu", str(gpu), "--tokens", "1e9")


def test_options_without_effect_are_named():
    from llmcalc.cli.common import UnusedOption

    with pytest.warns(UnusedOption, match="--gpu has no effect without --tokens"):
        assert run("flops", "--model", "gpt2", "--gpu", "h100").exit_code == 0
    with pytest.warns(UnusedOption, match="--per-gpu"):
        run("mfu", "--model", "gpt2", "--gpu", "h100", "--step-time", "1", "--per-gpu")


def test_bad_option_values_exit_2():
    assert "token length" in _error("flops", "--model", "gpt2", "--seq", "lots")
    assert "--efficiency" in _error("flops", "--model", "gpt2", "--efficiency", "1.5", "--tokens", "1e9",
                                    "--gpu", "a100")
    assert "one output format" in _error("params", "--model", "gpt2", "--json", "--csv")


def test_user_preset_directory_via_env(tmp_path, monkeypatch):
    models = tmp_path / "mine" / "models"
    models.mkdir(parents=True)
    (models / "x.yaml").write_text(Path(_model_yaml(tmp_path)).read_text().replace("\n", "\n  ")
                                   .join(["my-tiny:\n  ", ""]).rstrip() + "\n")
    monkeypatch.setenv("LLMCALC_PRESETS", str(tmp_path / "mine"))
    assert run_json("params", "--model", "my-tiny")["model"] == "my-tiny"


def test_presets_list_and_show():
    data = json.loads(run("presets", "--json").stdout)
    names = {m["name"] for m in data["models"]}
    assert {"llama-2-7b", "deepseek-v3", "nanogpt-124m"} <= names
    assert {"h100-sxm", "a800", "tpu-v5p", "gaudi3"} <= {g["name"] for g in data["gpus"]}
    shown = json.loads(run("presets", "show", "h100", "--json").stdout)
    assert shown["kind"] == "GPU" and shown["fields"]["memory_bytes"] == 80 * 2**30
    assert run("presets", "show", "mixtral-8x7b").exit_code == 0


def test_every_command_has_help_and_is_in_the_readme():
    import typer.main

    readme = README.read_text()

    def walk(group, prefix):
        for name, command in group.commands.items():
            path = prefix + [name]
            assert command.help, path
            assert f"llmcalc {' '.join(path)}" in readme, f"README has no example of `llmcalc {' '.join(path)}`"
            assert run(*path, "--help").exit_code == 0
            if hasattr(command, "commands"):
                walk(command, path)

    walk(typer.main.get_command(app), [])
