"""Hugging Face ``config.json`` -> ModelSpec: find the file, read it, map it.

``load`` finds the file (a path, a model directory, or a hub id already in the local Hugging Face
cache; the network is never touched), ``from_config`` maps its fields with the mapping registered
for its ``model_type`` in ``hfmappers.MAPPERS`` (the parameter count equals that of the model's
``transformers`` implementation; checked in tests/fidelity/).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from . import safeio

from .hfmappers import MAPPERS, map_generic
from .spec import ModelSpec, SpecError
from .units import MAX_LAYERS, MAX_QUANTITY


class NotCached(SpecError):
    """A hub id whose config.json is not in the local Hugging Face cache."""


class HFConfigWarning(UserWarning):
    """A config.json mapped only approximately: an unknown model_type read with generic=True."""


# Keys that never change a parameter count or a FLOP (ids, dtypes, numerics, bookkeeping).
NEUTRAL_KEYS = frozenset({
    "_name_or_path", "architectures", "auto_map", "bos_token_id", "eos_token_id", "pad_token_id",
    "unk_token_id", "sep_token_id", "decoder_start_token_id", "torch_dtype", "dtype",
    "transformers_version", "use_cache", "initializer_range", "init_std", "rms_norm_eps",
    "layer_norm_eps", "layer_norm_epsilon", "norm_epsilon", "rope_theta", "rope_scaling",
    "rope_parameters", "pretraining_tp", "tokenizer_class", "task_specific_params", "model_type",
    "output_router_logits", "router_aux_loss_coef", "bias_dropout_fusion", "gradient_checkpointing",
})


# -- finding config.json -------------------------------------------------------------------------

def hub_cache_dir() -> Path | None:
    """$HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub (huggingface_hub's rule);
    None with no home directory to find it in."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return safeio.user_path(explicit)
    if os.environ.get("HF_HOME"):
        return safeio.user_path(os.environ["HF_HOME"]) / "hub"
    cache_home = safeio.env_dir("XDG_CACHE_HOME", ".cache")
    return cache_home / "huggingface" / "hub" if cache_home is not None else None


def is_hub_id(text: str) -> bool:
    org, sep, name = text.partition("/")
    ok = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    return bool(sep and org and name) and set(org) <= ok and set(name) <= ok and not org.startswith(".")


def _from_hub_cache(hub_id: str) -> Path:
    """snapshots/<refs/main>/config.json if present, else the newest snapshot that has one."""
    cache = hub_cache_dir()
    if cache is None:
        raise SpecError(f"{hub_id}: no home directory to find the Hugging Face cache in (HOME is unset); "
                        "set HF_HOME, or pass the path to its config.json")
    if safeio.exists(str(cache)) and not safeio.exists(str(cache), "is_dir"):
        raise SpecError(f"{hub_id}: the Hugging Face cache {safeio.shown(cache)} is not a directory; point "
                        "HF_HOME or HF_HUB_CACHE at one, or pass the path to its config.json")
    repo = cache / ("models--" + hub_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    ref = repo / "refs" / "main"
    if ref.is_file():  # the revision `main` points at, as huggingface_hub resolves it
        try:
            pinned = snapshots / safeio.read_text(ref).strip() / "config.json"
        except SpecError:  # an unreadable ref: fall back to the newest snapshot
            pinned = None
        if pinned is not None and pinned.is_file():
            return pinned
    found = [d / "config.json" for d in snapshots.glob("*") if (d / "config.json").is_file()]
    if not found:
        raise NotCached(f"{hub_id} is not in the local Hugging Face cache ({safeio.shown(cache)}); get it with "
                        f"`huggingface-cli download {hub_id} config.json`, or pass the path to its config.json")
    return max(found, key=lambda p: p.parent.stat().st_mtime)


def resolve(text: str) -> tuple[Path, str, str]:
    """(config.json path, model name, source) for a file, a model directory or a cached hub id."""
    path = safeio.user_path(text)
    if not safeio.exists(str(path)) and (len(text) > 1024 or "\0" in text):
        raise SpecError(f"{safeio.shown(text)}: no such file, directory or cached model")
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise SpecError(f"{path}: no config.json in this directory")
        return config, path.resolve().name, str(config)
    if path.is_file():
        name = path.resolve().parent.name if path.name == "config.json" else path.stem
        return path, name or path.stem, str(path)
    hub_id = text.rstrip("/")
    if text.endswith(".json") or not is_hub_id(hub_id):
        raise SpecError(f"{text}: no such file or directory")
    config = _from_hub_cache(hub_id)
    return config, hub_id, f"https://huggingface.co/{hub_id}/blob/main/config.json"


def read_config(path: Path) -> dict:
    """Parse config.json (safeio: a regular UTF-8 file of bounded size); errors name the file and line."""
    data = safeio.load_json(safeio.read_text(path, "config.json"), path)
    if not isinstance(data, dict):
        raise SpecError(f"{safeio.shown(path)}: a config.json must be a JSON object of fields")
    return data


def load(text: str, generic: bool = False) -> ModelSpec:
    """A ModelSpec from a config.json path, a model directory, or a hub id in the local cache."""
    path, name, source = resolve(text)
    try:
        return from_config(read_config(path), name, generic=generic, source=source)
    except SpecError as exc:  # the mapping names the model; the user named a file: say which
        shown, said = safeio.shown(text), str(exc).removeprefix(f"{name}: ")
        raise exc if said.startswith(shown) else SpecError(f"{shown}: {said}") from None


# -- reading fields ------------------------------------------------------------------------------

class Fields:
    """A config.json mapping that remembers which keys were read (JSON null counts as absent).

    ``ignored`` (the keys never read) feeds the generic mapping's warning.
    """

    def __init__(self, raw: dict, where: str):
        self.raw, self.where, self.read = raw, where, set()
        self.defaulted: dict[str, object] = {}  # absent fields a mapping took a default for (the generic warning)

    def get(self, *keys: str, default=None):
        self.read.update(keys)
        for key in keys:
            if self.raw.get(key) is not None:
                return self.raw[key]
        if default is not None:
            self.defaulted.setdefault(keys[0], default)
        return default

    def int(self, *keys: str, default: int | None = None, minimum: int | None = None) -> int:
        value = self.get(*keys, default=default)
        if value is None:
            raise SpecError(f"{self.where}: config.json has no {' or '.join(keys)}")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{self.where}: {keys[0]} must be a whole number, got {value!r}")
        if minimum is not None and value < minimum:
            raise SpecError(f"{self.where}: {keys[0]} must be at least {minimum}, got {value}")
        cap = MAX_LAYERS if any("layer" in k for k in keys) else MAX_QUANTITY  # mappers loop over layers
        if abs(value) > cap:
            raise SpecError(f"{self.where}: {keys[0]} = {str(value)[:20]} is not a plausible size (at most {cap:,})")
        return value

    def ints(self, key: str) -> list[int]:
        """A list of whole numbers (layer indices), empty when absent."""
        value = self.get(key, default=[])
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise SpecError(f"{self.where}: {key} must be a list of layer numbers, got {value!r}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.get(key, default=default)
        if not isinstance(value, bool):
            raise SpecError(f"{self.where}: {key} must be true or false, got {value!r}")
        return value

    def ignored(self) -> list[str]:
        return sorted(k for k in self.raw if k not in self.read)


# -- mapping -------------------------------------------------------------------------------------

def from_config(cfg: dict, name: str, generic: bool = False, source: str = "") -> ModelSpec:
    """Map a parsed config.json to a ModelSpec with the mapping registered for its model_type.

    An unknown model_type is an error unless ``generic``: then the standard field names are read
    (a Llama-style block: RMSNorm, SwiGLU, rotary) and one HFConfigWarning lists what was ignored.
    """
    model_type = str(cfg.get("model_type", ""))
    c = Fields(cfg, name)
    mapper = MAPPERS.get(model_type)
    if mapper is not None and generic:
        warnings.warn(f"--generic has no effect on {name}: model_type {model_type} has its own exact mapping",
                      UserWarning, stacklevel=2)
    if mapper is None and not generic:
        got = f"model_type {model_type!r} is not supported" if model_type else "the config has no model_type"
        raise SpecError(f"{name}: {got}; supported: {', '.join(sorted(MAPPERS, key=str.lower))} (or map the "
                        "standard fields best-effort with --generic, generic=True in Python)")
    fields = (mapper or map_generic)(c)
    notes = [f"from config.json (model_type {model_type or 'missing'})"]
    quantization = c.get("quantization_config", "compression_config")  # compression_config: older compressed-tensors
    if quantization is not None:
        from .quant import from_quantization_config

        fields.update(from_quantization_config(quantization, name))
        notes.append(f"{fields['quant_method']} checkpoint, {fields['quant_dtype']} weights")
    if mapper is None:
        ignored = c.ignored()
        sized = [k for k in ignored if k not in NEUTRAL_KEYS]
        neutral = [k for k in ignored if k in NEUTRAL_KEYS]
        msg = (f"{name}: unknown model_type {model_type!r}; mapped the standard fields as a Llama-style "
               f"decoder (a gated MLP of hidden_act, whatever it names; RMSNorm; rotary positions); ignored "
               f"fields: {', '.join(sized) or 'none'}")
        if neutral:
            msg += f" (and, with no effect on size: {', '.join(neutral)})"
        if c.defaulted:
            msg += "; absent, so assumed: " + ", ".join(f"{k} {str(v).lower() if isinstance(v, bool) else v}"
                                                        for k, v in c.defaulted.items())
        warnings.warn(msg, HFConfigWarning, stacklevel=2)
        notes.append("generic best-effort mapping")
    return ModelSpec(name=name, source=source, notes="; ".join(notes), **fields)
