"""presets.model_to_yaml: the preset writer, read back by the preset reader to an equal ModelSpec."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from llmcalc import catalog, presets
from llmcalc.spec import ModelSpec

from .conftest import run

DATA = Path(__file__).parent / "data" / "hf"

# Strings a hand-written emitter gets wrong: YAML 1.1 booleans and nulls, number look-alikes,
# indicators, quotes, unicode.
AWKWARD = ("no", "null", "yes", "on", "off", "~", "true", "1e5", "1.5", "0x1f", "123", "-", "- x",
           "a: b", "#hash", "it's", 'say "hi"', "[list]", "{map}", "&anchor", "*ref", "!tag", "%x", "@at",
           "`tick`", "ünïcödé λ 模型", "trailing: ", " padded ", "")


def _base() -> ModelSpec:
    return presets.load_model("llama-3.2-1b")


def _round_trip(spec, tmp_path: Path, source: str = "hub/org-model"):
    """Write spec, read it back both ways: yaml.safe_load + model_from_fields, and load_model FILE:NAME."""
    text = presets.model_to_yaml(spec, source)
    data = yaml.safe_load(text)
    assert list(data) == [spec.name]
    by_fields = presets.model_from_fields(spec.name, data[spec.name], "export")
    path = tmp_path / "exported.yaml"
    path.write_text(text, encoding="utf-8")
    by_file = presets.load_model(f"{path}:{spec.name}")
    return text, by_fields, by_file


@pytest.mark.parametrize("name", ["no", "null", "yes", "1e5", "123", "true", "modèle-λ", "~"])
def test_awkward_names_round_trip(name, tmp_path):
    spec = dataclasses.replace(_base(), name=name)
    text, by_fields, by_file = _round_trip(spec, tmp_path)
    assert by_fields == spec and by_file == spec
    assert isinstance(yaml.safe_load(text)[name]["hidden_act"], str)


def test_awkward_values_round_trip(tmp_path):
    spec = dataclasses.replace(
        _base(), name="no", aliases=AWKWARD, dropout=1e-05, hidden_act="null",
        notes="ratio: 1:2; “quoted” 'single' \"double\" — ünïcödé # not a comment",
        source="https://example.org/a: b?c=1#frag", sliding_window=4096)
    text, by_fields, by_file = _round_trip(spec, tmp_path)
    assert by_fields == spec and by_file == spec
    fields = yaml.safe_load(text)["no"]
    assert fields["dropout"] == 1e-05 and isinstance(fields["dropout"], float)
    assert fields["aliases"] == list(AWKWARD)
    assert "ünïcödé" in text  # written as unicode, not escaped


def test_small_and_whole_floats_stay_floats(tmp_path):
    for dropout in (1e-05, 1e-10, 0.5, 0.0):
        spec = dataclasses.replace(_base(), dropout=dropout)
        _, by_fields, by_file = _round_trip(spec, tmp_path)
        assert by_fields.dropout == by_file.dropout == dropout
        assert isinstance(by_file.dropout, float)


def test_layout_comment_order_and_one_line_per_field(tmp_path):
    long_notes = "word " * 60 + "end"
    spec = dataclasses.replace(_base(), notes=long_notes, aliases=("a", "b"), lm_head_bias=True, source="")
    text = presets.model_to_yaml(spec, "org/model")
    lines = text.splitlines()
    assert lines[0] == "# Imported from org/model by llmcalc; fields follow llmcalc.spec.ModelSpec."
    assert lines[1] == "" and lines[2] == f"{spec.name}:"
    assert all(line.startswith("  ") and ": " in line for line in lines[3:])  # never folded
    assert "  aliases: [a, b]" in lines
    keys = [line.split(":")[0].strip() for line in lines[3:]]
    core = [k for k in presets.CORE_ORDER if k in keys]
    assert keys[:len(core)] == core and keys[-2:] == ["source", "notes"]
    assert "lm_head_bias" in keys and "final_norm" not in keys  # non-default stated, default left out
    assert yaml.safe_load(text)[spec.name]["source"] == "org/model"  # an empty source is filled in
    assert presets.model_from_fields(spec.name, yaml.safe_load(text)[spec.name], "x") == dataclasses.replace(
        spec, source="org/model")


def test_source_with_a_newline_keeps_the_comment_one_line():
    text = presets.model_to_yaml(_base(), "line one\nline two")
    assert text.splitlines()[0].startswith("# Imported from line one line two")
    assert yaml.safe_load(text)  # still valid YAML


def test_every_shipped_preset_round_trips(tmp_path):
    for spec in presets.all_models():
        _, by_fields, by_file = _round_trip(spec, tmp_path)
        assert by_fields == spec and by_file == spec, spec.name


def test_import_config_writes_a_loadable_preset(tmp_path):
    out = tmp_path / "mine.yaml"
    path = catalog.import_config(str(DATA / "qwen3-0.6b.json"), "no", str(out), generic=False)
    assert path == out
    spec = presets.load_model(f"{out}:no")
    assert spec.name == "no" and spec.qk_norm == "head" and spec.source == str(DATA / "qwen3-0.6b.json")


def test_importing_over_a_shipped_name_says_it_will_shadow_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    presets.catalog.cache_clear()
    with pytest.warns(UserWarning, match="--name llama-3-8b is a shipped model preset's name"):
        catalog.import_config(str(DATA / "gemma-2-2b.json"), "llama-3-8b", None, generic=False)
    presets.catalog.cache_clear()
    assert presets.load_model("llama-3-8b").norms_per_layer == 4  # the user's file, first in the search order
    presets.catalog.cache_clear()


def test_cli_presets_import_to_the_user_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    result = run("presets", "import", str(DATA / "gemma-2-2b.json"), "--name", "my-gemma")
    assert result.exit_code == 0, result.output
    presets.catalog.cache_clear()
    spec = presets.load_model("my-gemma")
    assert spec.name == "my-gemma" and spec.norms_per_layer == 4
