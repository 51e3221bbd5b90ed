"""The shipped presets' index (llmcalc/presetindex.py): it matches the YAML it was made from, a lookup
of a shipped preset reads it instead of importing yaml, and where it is stale, damaged or missing the
YAML decides, so the index can make a lookup faster but never different."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llmcalc import presetindex, presets


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch):
    """A copy of the shipped presets (index included) standing in for the real ones."""
    copy = tmp_path / "presets"
    shutil.copytree(presets.builtin_dir(), copy)
    monkeypatch.setattr(presets, "builtin_dir", lambda: copy)
    presets.catalog.cache_clear()
    presetindex._index.cache_clear()
    yield copy
    presets.catalog.cache_clear()
    presetindex._index.cache_clear()


@pytest.mark.parametrize("kind", list(presets.KINDS))
def test_the_index_is_what_the_yaml_files_say(kind):
    target, text = presets.index_text(kind)
    written = target.read_text(encoding="utf-8")
    assert written == text, \
        "the preset index is stale: run `python scripts/index_presets.py` and commit presets/index/"


@pytest.mark.parametrize("kind", list(presets.KINDS))
def test_every_shipped_file_is_served_from_the_index(kind):
    builtin = presets.builtin_dir()
    for path, text in presets.kind_files(builtin, kind):
        assert presetindex.lookup(path, text, builtin) == presets._parse_yaml(path, text), path.name


def test_a_shipped_lookup_does_not_import_yaml(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LLMCALC_PRESETS"} | {"XDG_CONFIG_HOME": str(tmp_path)}  # no user files
    code = ("import sys; from llmcalc import presets; presets.load_model('llama-3.1-8b'); presets.load_gpu('h100'); "
            "presets.catalog('clusters'); print(sorted(m for m in sys.modules if m.split('.')[0] == 'yaml'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert done.stdout.strip() == "[]"


def test_an_edited_file_is_read_from_its_yaml(shipped_copy):
    llama = shipped_copy / "models" / "llama.yaml"
    text = llama.read_text(encoding="utf-8")
    assert "  vocab_size: 32000\n" in text
    llama.write_text(text.replace("  vocab_size: 32000\n", "  vocab_size: 32001\n", 1), encoding="utf-8")
    assert presets.load_model("llama-2-7b").vocab_size == 32001  # same length: only the checksum tells
    assert presets.load_model("llama-3.1-8b").vocab_size == 128256  # the rest of the file as written


@pytest.mark.parametrize("damage", ["", "{", '{"format": 0, "files": []}', '{"format": 1, "files": [{"file": 3}]}',
                                    "[1, 2]"])
def test_a_damaged_or_foreign_index_is_ignored(shipped_copy, damage):
    presetindex.index_path(shipped_copy, "models").write_text(damage, encoding="utf-8")
    assert presets.load_model("llama-2-7b").vocab_size == 32000


def test_a_missing_index_leaves_the_yaml(shipped_copy):
    shutil.rmtree(shipped_copy / "index")
    assert presets.load_gpu("h100").name == "h100-sxm"


def test_user_presets_shadow_shipped_ones_and_their_aliases(tmp_path, monkeypatch):
    """A user preset of a shipped name drops the shipped one's aliases; a user alias that is a shipped
    name loses to the name; a user alias a shipped preset also lists is the user's."""
    models = tmp_path / "config" / "llmcalc" / "presets" / "models"
    models.mkdir(parents=True)
    tiny = "  hidden_size: 64\n  num_hidden_layers: 2\n"
    (models / "a.yaml").write_text(f"llama-2-7b:\n{tiny}mine:\n  aliases: [gpt2, llama3-8b]\n{tiny}")
    (models / "b.yaml").write_text(f"other:\n  aliases: [llama2-7b]\n{tiny}")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    presets.catalog.cache_clear()
    try:
        assert presets._lookup("models", "llama-2-7b")[2]["hidden_size"] == 64
        assert presets._lookup("models", "llama2-7b")[0] == "other"  # llama-2-7b, now the user's, lists it no more
        assert presets._lookup("models", "gpt2")[1].name == "gpt2.yaml"  # a shipped name wins over a user alias
        assert presets._lookup("models", "llama3-8b")[0] == "mine"
    finally:
        presets.catalog.cache_clear()


def test_the_builder_refuses_what_json_cannot_carry(tmp_path):
    path = tmp_path / "dated.yaml"
    for text in ("m:\n  released: 2024-01-01\n", "m:\n  8: eight\n"):
        with pytest.raises(ValueError, match="JSON cannot carry"):
            presetindex.build([(path, text)], presets._parse_yaml)


def test_the_index_script_finds_nothing_stale():
    script = Path(__file__).resolve().parents[1] / "scripts" / "index_presets.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
    assert json.loads(presetindex.index_path(presets.builtin_dir(), "gpus").read_text())["format"] == presetindex.FORMAT


def test_show_fills_in_the_head_dim_a_preset_leaves_to_its_default():
    """Llama 3 8B states no head_dim: it is hidden_size / heads, 4,096 / 32 = 128, and `presets show` says so."""
    from .conftest import run_json

    assert run_json("presets", "show", "llama-3-8b")["fields"]["head_dim"] == 128
