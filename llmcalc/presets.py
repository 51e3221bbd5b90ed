"""Find and load model, GPU and cluster presets: built-in YAML, user preset directories, user files.

Search order (first match wins, so a user preset can shadow a built-in one):
1. directories in $LLMCALC_PRESETS (os.pathsep-separated), each with models/, gpus/ and clusters/;
2. the per-user directory $XDG_CONFIG_HOME/llmcalc/presets (default ~/.config/llmcalc/presets);
3. the presets shipped with llmcalc.
``--model`` also takes a YAML file (``my.yaml`` or ``my.yaml:NAME``), a Hugging Face
config.json, a model directory, or a hub id present in the local Hugging Face cache.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from . import presetindex, safeio
from .spec import ModelSpec, SpecError, model_fields

if TYPE_CHECKING:  # GPU lookups load it (gpufields.py)
    from .gpuspec import GPUSpec


class PresetError(SpecError):
    """A preset that cannot be found or read (exit code 2)."""


class UnknownPreset(PresetError):
    """No preset has that name or alias; ``suggested``: the message names the nearest ones."""

    def __init__(self, message: str, suggested: bool) -> None:
        super().__init__(message)
        self.suggested = suggested


# Each kind of preset (its directory): what one is called in messages, and the key a file holding one
# preset alone has at its top level (a file of several maps names to fields).
KINDS = {"models": ("model", "hidden_size"), "gpus": ("GPU", "tflops"), "clusters": ("cluster", "gpus_per_node")}


def builtin_dir() -> Path:
    """Shipped presets: inside the wheel (llmcalc/presets) or the checkout's top-level presets/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "presets", here.parent / "presets"):
        if (candidate / "models").is_dir():
            return candidate
    raise PresetError("llmcalc's built-in presets are missing; reinstall llmcalc")


def search_dirs() -> list[Path]:
    """The preset directories to read, in order; one that is a file or unreadable is skipped with a
    warning (safeio.listable), as is a $LLMCALC_PRESETS entry that does not exist."""
    named = [safeio.user_path(p) for p in os.environ.get("LLMCALC_PRESETS", "").split(os.pathsep) if p]
    dirs = [d for d in named if safeio.listable(d, "LLMCALC_PRESETS")]
    user = user_dir()
    if user is not None and safeio.listable(user):
        dirs.append(user)
    return dirs + [builtin_dir()]


def user_dir() -> Path | None:
    """The per-user preset directory (where `presets import` writes); None with no home directory."""
    config = safeio.env_dir("XDG_CONFIG_HOME", ".config")
    return config / "llmcalc" / "presets" if config is not None else None


def read_yaml(path: Path) -> Any:
    """Parse one YAML file with a safe loader; errors name the file and line (cached per content)."""
    return _parse_yaml(path, _read(path))


def _read(path: Path) -> str:
    try:  # safeio: regular UTF-8 files of bounded size
        return safeio.read_text(path, "preset file")
    except SpecError as exc:
        raise PresetError(str(exc)) from None


@functools.lru_cache(maxsize=None)
def _parse_yaml(path: Path, text: str) -> Any:
    try:  # safeio: bounded aliases, no duplicate keys
        return safeio.load_yaml(text, path)
    except SpecError as exc:
        raise PresetError(str(exc)) from None


def kind_files(directory: Path, kind: str) -> tuple[tuple[Path, str], ...]:
    """The preset files of a kind (a key of KINDS) in one preset directory, and their texts, by name."""
    return tuple((path, _read(path)) for path in sorted((directory / kind).glob("*.y*ml")))


def index_text(kind: str) -> tuple[Path, str]:
    """The index file of a kind's shipped presets and the text it should hold (presetindex.build)."""
    builtin = builtin_dir()
    return presetindex.index_path(builtin, kind), presetindex.build(kind_files(builtin, kind), _parse_yaml)


def _entries(sources: Iterable[tuple[Path, str]], builtin: Path) -> dict[str, tuple[Path, dict]]:
    """The presets of these files: lower-case name -> (file, raw fields), the first definition winning;
    a shipped file (in ``builtin``) from the index where it holds the file's text (presetindex.py)."""
    found: dict[str, tuple[Path, dict]] = {}
    for path, text in sources:
        data = presetindex.lookup(path, text, builtin)
        if data is None:
            data = _parse_yaml(path, text)
        if not isinstance(data, dict):
            raise PresetError(f"{path}: a preset file must map names to fields")
        for name, fields in data.items():
            if not isinstance(fields, dict):
                raise PresetError(f"{path}: preset {name!r} must be a mapping of fields")
            found.setdefault(str(name).lower(), (path, fields))
    return found


def _alias_list(name: str, path: Path, fields: dict) -> list[str]:
    listed = fields.get("aliases") or ()
    if not isinstance(listed, (list, tuple)):
        raise PresetError(f"{safeio.shown(path)}: {name}.aliases must be a list of names, got {listed!r}")
    return [str(alias).lower() for alias in listed]


def _aliases(entries: dict[str, tuple[Path, dict]]) -> dict[str, str]:
    """alias -> name, lower-case; an alias two presets list is the earlier one's."""
    aliases: dict[str, str] = {}
    for name, (path, fields) in entries.items():
        for alias in _alias_list(name, path, fields):
            aliases.setdefault(alias, name)
    return aliases


@functools.lru_cache(maxsize=None)  # a broken file raises, which lru_cache keeps not: it is read afresh next time
def catalog(kind: str) -> tuple[dict[str, tuple[Path, dict]], dict[str, str]]:
    """(presets by name, alias -> name), names and aliases lower-case, from the preset files of every directory
    of search_dirs() in its order (the shipped presets last); read once (catalog.cache_clear() reads again)."""
    entries = _entries((source for directory in search_dirs() for source in kind_files(directory, kind)),
                       builtin_dir())
    return entries, _aliases(entries)


def _lookup(kind: str, name: str) -> tuple[str, Path, dict]:
    key = name.strip().lower()
    entries, aliases = catalog(kind)
    found = key if key in entries else aliases.get(key)
    if found is not None:
        path, fields = entries[found]
        return found, path, fields
    import difflib

    known = list(entries) + list(aliases)
    near = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    near = [aliases.get(n, n) for n in near]
    hint = f"; did you mean {', '.join(dict.fromkeys(near))}?" if near else ""
    raise UnknownPreset(f"unknown {KINDS[kind][0]} {name!r}{hint} (`llmcalc presets` lists them all)", bool(near))


def model_from_fields(name: str, fields: dict, where: str) -> ModelSpec:
    """Build a ModelSpec from preset fields, rejecting unknown keys and wrong types."""
    spec_fields = model_fields()
    unknown = [k for k in fields if k not in spec_fields or k == "name"]
    if unknown:
        hint = _did_you_mean(unknown[0], spec_fields)
        raise PresetError(f"{where}: unknown field {unknown[0]!r} in model {name!r}{hint}")
    missing = [f.name for f in spec_fields.values()
               if f.name != "name" and f.default is dataclasses.MISSING and f.name not in fields]
    if missing:
        raise PresetError(f"{where}: model {name!r} is missing {', '.join(missing)}")
    values = {k: _typed(where, name, k, v, spec_fields[k].type) for k, v in fields.items()}
    try:
        return ModelSpec(name=name, **values)
    except SpecError as exc:
        raise PresetError(f"{where}: {exc}") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# (annotation kind, accepts a YAML value, converts it), tried in this order.
_SCALAR_KINDS = (
    ("bool", lambda v: isinstance(v, bool), lambda v: v),
    ("int", lambda v: isinstance(v, int) and not isinstance(v, bool), lambda v: v),
    ("float", _is_number, float),
    ("str", lambda v: isinstance(v, str) or _is_number(v), str),
)


def _typed(where: str, name: str, key: str, value: Any, annotation: str) -> Any:
    """Check a YAML value against the dataclass annotation (ints stay ints, bools stay bools)."""
    kinds = annotation.replace(" ", "").split("|")
    if value is None and "None" in kinds:
        return None
    for kind, accepts, convert in _SCALAR_KINDS:
        if kind in kinds and accepts(value):
            return convert(value)
    if annotation.startswith("tuple") and isinstance(value, list):
        return tuple(str(v) for v in value)
    want = {"int": "a whole number", "bool": "true or false", "float": "a number", "str": "text"}
    expected = " or ".join(want.get(k, k) for k in kinds if k != "None")
    raise PresetError(f"{where}: {name}.{key} must be {expected}, got {value!r}")


def _did_you_mean(key: str, known: Iterable[str]) -> str:
    import difflib

    near = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {near[0]}?)" if near else ""


def _file_ref(text: str) -> tuple[Path, str] | None:
    """(path, wanted preset or "") when ``text`` names a YAML file, ``FILE`` or ``FILE:NAME``."""
    base, _, wanted = text.partition(":") if not safeio.exists(text) else (text, "", "")
    return (Path(base), wanted) if base.endswith((".yaml", ".yml")) else None


def find(kind: str, text: str) -> tuple[str, Path, dict]:
    """(name, file, raw fields) of the preset of ``kind`` (a key of KINDS) that ``text`` names: a YAML
    file (``FILE`` or ``FILE:NAME``), else a preset name or alias."""
    ref = _file_ref(text)
    return _from_file(*ref, kind) if ref else _lookup(kind, text)


def _from_file(path: Path, wanted: str, kind: str) -> tuple[str, Path, dict]:
    """A user YAML file: one preset (fields at top level) or a preset file (``FILE:NAME``)."""
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise PresetError(f"{path}: expected a mapping of fields")
    if KINDS[kind][1] in data:
        return path.stem, path, data
    if wanted:
        for name, fields in data.items():
            if str(name).lower() == wanted.lower():
                if not isinstance(fields, dict):
                    raise PresetError(f"{safeio.shown(path)}: preset {name!r} must be a mapping of fields")
                return str(name), path, fields
        raise PresetError(f"{path}: no preset {wanted!r}; it has {', '.join(map(str, data))}")
    if len(data) == 1:
        name, fields = next(iter(data.items()))
        if isinstance(fields, dict):
            return str(name), path, fields
    raise PresetError(f"{path}: holds several presets ({', '.join(map(str, data))}); "
                      f"pick one with {path}:NAME")


def preset_for_hub_id(hub_id: str) -> tuple[str, str] | None:
    """(preset, how it matched): the built-in model preset made from ``hub_id``'s config.json (its
    ``source`` names the repo), else the one whose name or alias is the repo's (Llama-3.1-8B)."""
    entries, aliases = catalog("models")
    wanted = f"huggingface.co/{hub_id}/".lower()
    for name, (_, fields) in entries.items():
        if wanted in str(fields.get("source", "")).lower():
            return name, "made from that repository's config.json"
    repo = hub_id.rpartition("/")[2].lower()
    name = repo if repo in entries else aliases.get(repo)
    return (name, "of the same name") if name else None


def file_kind(text: str) -> str | None:
    """"GPU", "cluster" or "model" for a YAML file (a GPU has tflops, a cluster gpus_per_node, at the top
    or in its entries); None otherwise."""
    ref = _file_ref(text)
    data = read_yaml(ref[0]) if ref else None
    if not isinstance(data, dict):
        return None
    single = any(key in data for _, key in KINDS.values())
    entries = [data] if single else [v for v in data.values() if isinstance(v, dict)]
    return next((what for what, key in (KINDS["gpus"], KINDS["clusters"]) if any(key in e for e in entries)), "model")


def load_model(text: str, generic: bool = False) -> ModelSpec:
    """A model from a preset name, a YAML file, a config.json, a model dir, or a cached hub id."""
    ref = _file_ref(text)
    if not ref and (text.endswith(".json") or safeio.exists(text, "is_dir") or ("/" in text and not safeio.exists(text))):
        from . import hfconfig  # lazy: only config.json users pay for it

        try:
            return hfconfig.load(text, generic=generic)
        except hfconfig.NotCached:
            found = preset_for_hub_id(text)
            if found is None:
                raise
        import warnings

        warnings.warn(f"{text} is not in the local Hugging Face cache; using the built-in preset {found[0]}, "
                      f"{found[1]}", UserWarning, stacklevel=2)
        text = found[0]
    if generic:
        import warnings

        warnings.warn(f"--generic has no effect on {text}: it maps a config.json of an unknown model_type, "
                      "and this is a preset", UserWarning, stacklevel=2)
    name, path, fields = find("models", text)
    return model_from_fields(name, fields, str(path))


def load_gpu(text: str) -> GPUSpec:
    """A GPU from a preset name or a YAML file (gpufields.py reads its fields)."""
    from .gpufields import from_fields

    name, path, fields = find("gpus", text)
    return from_fields(name, fields, str(path))


def all_models() -> Iterable[ModelSpec]:
    for name, (path, fields) in catalog("models")[0].items():
        yield model_from_fields(name, fields, str(path))


def all_gpus() -> Iterable[GPUSpec]:
    from .gpufields import from_fields

    for name, (path, fields) in catalog("gpus")[0].items():
        yield from_fields(name, fields, str(path))


def spec_to_dict(spec: ModelSpec | GPUSpec) -> dict[str, Any]:
    """Every field of a resolved spec, defaults included (for `presets show` and JSON inputs)."""
    out = dataclasses.asdict(spec)
    for key, value in out.items():
        if isinstance(value, tuple):
            out[key] = list(value)
    return out


# -- writing a model preset ----------------------------------------------------------------------

# The fields every shipped preset states, in the order the preset files use.
CORE_ORDER = ("aliases", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "head_dim", "vocab_size", "intermediate_size", "max_position_embeddings", "mlp_type",
              "hidden_act", "norm_type", "norm_bias", "norms_per_layer", "qk_norm", "parallel_attn",
              "position_embedding",
              "tie_word_embeddings", "attention_bias", "attention_out_bias", "mlp_bias", "dropout")
# Stated even at their defaults; any other field is written only where it differs from its default.
ALWAYS = frozenset({"aliases", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                    "vocab_size", "intermediate_size", "max_position_embeddings", "mlp_type", "hidden_act",
                    "norm_type", "norms_per_layer", "position_embedding", "tie_word_embeddings",
                    "attention_bias", "attention_out_bias", "mlp_bias", "dropout", "source", "notes"})


def _preset_fields(spec: ModelSpec, source: str) -> dict[str, Any]:
    """The fields to state, in preset order; tuples as lists; ``source`` fills an empty spec.source."""
    spec_fields = model_fields()
    values = {k: getattr(spec, k) for k in spec_fields if k != "name"}
    if values["num_key_value_heads"] is None:
        values.pop("num_key_value_heads")
    values["source"] = values["source"] or source
    wanted = [k for k in values if k in ALWAYS or values[k] != spec_fields[k].default]
    order = [k for k in CORE_ORDER if k in wanted]
    order += [k for k in wanted if k not in order and k not in ("source", "notes")] + ["source", "notes"]
    return {k: list(values[k]) if isinstance(values[k], tuple) else values[k] for k in order}


def model_to_yaml(spec: ModelSpec, source: str) -> str:
    """A preset file (``name: {fields}``) in the layout of presets/models/*.yaml.

    Fields in CORE_ORDER first, then the others, then source and notes; ``load_model`` and
    ``model_from_fields`` read it back to an equal ModelSpec.
    """
    import yaml  # lazy: start-up time

    body = yaml.safe_dump({spec.name: _preset_fields(spec, source)}, sort_keys=False, allow_unicode=True,
                          default_flow_style=None, width=float("inf"))  # one line per field, never folded
    comment = f"# Imported from {source} by llmcalc; fields follow llmcalc.spec.ModelSpec."
    return " ".join(comment.splitlines()) + "\n\n" + body
