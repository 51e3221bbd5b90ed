"""A preset looked up by name parses only the shipped files that can define it (presets._find): it
must find what the whole catalog finds, for every shipped name and alias, with or without user presets."""

from __future__ import annotations

import pytest

from llmcalc import presets, safeio


def _by_catalog(kind: str, key: str):
    entries, aliases = presets.catalog(kind)
    name = key if key in entries else aliases.get(key)
    return (name, entries[name]) if name else (None, None)


def _by_find(kind: str, key: str):
    name, entries = presets._find(kind, key)
    return (name, entries[name]) if name else (None, None)


def _keys(kind: str) -> list[str]:
    entries, aliases = presets.catalog(kind)
    return list(entries) + list(aliases)


@pytest.mark.parametrize("kind", ["models", "gpus", "clusters"])
def test_every_shipped_name_and_alias_is_found_as_the_catalog_finds_it(kind):
    for key in _keys(kind):
        assert _by_find(kind, key) == _by_catalog(kind, key) != (None, None), key


@pytest.mark.parametrize("kind", ["models", "gpus", "clusters"])
def test_a_name_no_file_holds_is_left_to_the_catalog(kind):
    for key in ("nonesuch", "llama-2-7", "h10", ""):
        assert presets._find(kind, key) == (None, {})


def test_user_presets_shadow_and_take_aliases_as_the_catalog_says(tmp_path, monkeypatch):
    """A user preset of a shipped name drops the shipped aliases; a user alias that is a shipped name
    loses to the name; a user alias that a shipped preset also lists is the user's."""
    models = tmp_path / "config" / "llmcalc" / "presets" / "models"
    models.mkdir(parents=True)
    tiny = "  hidden_size: 64\n  num_hidden_layers: 2\n"
    (models / "a.yaml").write_text(f"llama-2-7b:\n{tiny}mine:\n  aliases: [gpt2, llama3-8b, Mine-Too]\n{tiny}")
    (models / "b.yaml").write_text(f"MINE:\n{tiny}other:\n  aliases: [mine-too, llama2-7b]\n{tiny}")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    presets.catalog.cache_clear()
    for key in _keys("models") + ["mine-too", "llama2-7b"]:
        assert _by_find("models", key) == _by_catalog("models", key), key
    assert _by_find("models", "llama2-7b")[0] == "other"  # llama-2-7b, now the user's, no longer lists it
    assert _by_find("models", "gpt2")[1][0].name == "gpt2.yaml"
    assert _by_find("models", "llama3-8b")[0] == "mine"


def test_an_earlier_shipped_definition_decides_an_alias(tmp_path, monkeypatch):
    """Shipped files are read by their text; an alias is resolved only after every file naming its
    presets is read, since an earlier definition of a preset decides its aliases."""
    shipped = tmp_path / "shipped"
    (shipped / "models").mkdir(parents=True)
    (shipped / "models" / "a.yaml").write_text("first:\n  hidden_size: 1\n")
    (shipped / "models" / "b.yaml").write_text("first:\n  aliases: [nick]\nsecond:\n  aliases: [nick]\n")
    monkeypatch.setattr(presets, "builtin_dir", lambda: shipped)
    presets.catalog.cache_clear()
    assert _by_find("models", "nick") == _by_catalog("models", "nick")
    assert _by_find("models", "nick")[0] == "second"


@pytest.mark.parametrize("kind", ["models", "gpus", "clusters"])
def test_a_lookup_parses_each_shipped_entry_on_its_own(kind):
    """Every shipped file splits into one text per preset (a lookup parses one, not the whole file), and
    the texts parse to what the whole file does, in its order."""
    for path, text in presets._sources(kind)[-1]:
        whole, parts = safeio.load_yaml(text, path), safeio.entry_texts(text)
        merged = {name: fields for part in parts for name, fields in safeio.load_yaml(part, path).items()}
        assert len(parts) == len(whole), path.name
        assert list(merged.items()) == list(whole.items()), path.name


@pytest.mark.parametrize("text", [
    "base: &b\n  hidden_size: 1\nother:\n  <<: *b\n",  # an alias leans on another entry
    "# models\n---\nfirst:\n  hidden_size: 1\n",  # a document marker
    "first: {hidden_size: 1}\nsecond:\n  hidden_size: 2\n",  # a flow mapping on the name's line
])
def test_a_file_whose_entries_may_lean_on_each_other_is_parsed_whole(text):
    assert safeio.entry_texts(text) == (text,)


def test_comments_stay_with_their_entry_and_the_opening_one_with_the_first():
    text = "# file\n\nfirst:  # one\n  hidden_size: 1  # 4 * 2\n# about second\nsecond:\n  hidden_size: 2\n"
    assert safeio.entry_texts(text) == ("# file\n\nfirst:  # one\n  hidden_size: 1  # 4 * 2\n# about second\n",
                                     "second:\n  hidden_size: 2\n")
