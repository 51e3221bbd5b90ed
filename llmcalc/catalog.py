"""The `presets` command's data: listing, showing and importing presets (no rendering here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from . import presets, safeio
from .params import count
from .spec import SpecError


def listing() -> dict[str, list[dict[str, Any]]]:
    """Key figures per preset: models (shape, size) and GPUs (memory, bandwidth, peaks)."""
    models = []
    for m in presets.all_models():
        r = count(m)
        kind = "MoE" if m.is_moe else "dense"
        attention = "MLA" if m.is_mla else ("MHA" if m.kv_heads == m.num_attention_heads
                                            else "MQA" if m.kv_heads == 1 else "GQA")
        models.append({"name": m.name, "params": int(r["total"]), "active": int(r["active"]),
                       "layers": m.num_hidden_layers, "hidden": m.hidden_size,
                       "heads": m.num_attention_heads, "kv_heads": m.kv_heads,
                       "attention": attention, "mlp": kind, "context": m.max_position_embeddings,
                       "vocab": m.vocab_size})
    gpus = []
    for g in presets.all_gpus():
        gpus.append({"name": g.name, "vendor": g.vendor, "memory": g.memory_bytes,
                     "memory_bandwidth": g.memory_bandwidth,
                     "bf16": g.peak_flops.get("bf16") or g.peak_flops.get("fp16"),
                     "fp8": g.peak_flops.get("fp8"), "interconnect": g.interconnect_bandwidth})
    return {"models": models, "gpus": gpus}


# Units of the listing's numeric columns, so renderers format them without guessing from names.
LISTING_UNITS = {"params": "params", "active": "params", "memory": "byte",
                 "memory_bandwidth": "byte/s", "bf16": "FLOP/s", "fp8": "FLOP/s",
                 "interconnect": "byte/s"}


SHOW_UNITS = {"memory_bytes": "byte", "device_memory_bytes": "byte", "memory_bandwidth": "byte/s", "interconnect_bandwidth": "byte/s",
              "total_params": "params"}


def show(name: str) -> tuple[str, dict[str, Any]]:
    """("model" | "GPU", every resolved field) for a preset name or file."""
    if presets.file_kind(name) == "GPU":  # a GPU file's own errors, not the model reader's
        return "GPU", presets.spec_to_dict(presets.load_gpu(name))
    try:
        spec = presets.load_model(name)
        fields = presets.spec_to_dict(spec)
        fields["total_params"] = int(count(spec)["total"])
        return "model", fields
    except presets.PresetError as model_error:
        try:
            return "GPU", presets.spec_to_dict(presets.load_gpu(name))
        except presets.PresetError:
            raise model_error from None


def import_config(config: str, name: str, out: str | None, generic: bool, force: bool = False) -> Path:
    """Write a preset YAML for a Hugging Face config; returns the file written.

    An existing file is replaced only with ``force``, and never the config being read; a path that
    is a directory (or ends in '/'), a pipe or a device is refused before anything is opened."""
    from . import hfconfig

    check_preset_name(name)
    spec = dataclasses.replace(hfconfig.load(config, generic=generic), name=name)
    if not out and presets.user_dir() is None:
        raise SpecError("no home directory to keep presets in (HOME is unset); set XDG_CONFIG_HOME or pass --out")
    path = safeio.user_path(out) if out else presets.user_dir() / "models" / f"{name}.yaml"
    _check_destination(path, out, name, force, hfconfig.resolve(config)[0])
    text = presets.model_to_yaml(spec, source=str(config))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise SpecError(f"cannot write {safeio.shown(path)}: {getattr(exc, 'strerror', None) or exc}; "
                        "pass --out with a writable file") from None
    return path


def _check_destination(path: Path, out: str | None, name: str, force: bool, source: Path) -> None:
    flag = f"--out {safeio.shown(path)}" if out else safeio.shown(path)
    if (out or "").endswith(("/", "\\")) or safeio.exists(str(path), "is_dir"):
        raise SpecError(f"{flag} is a directory; name the file to write, e.g. {name}.yaml")
    if not safeio.exists(str(path)):
        return
    if not safeio.exists(str(path), "is_file"):
        raise SpecError(f"{flag} is not a regular file (a pipe or a device); name a file to write")
    if path.resolve() == source.resolve():
        raise SpecError(f"{flag} is the config being imported; write the preset to another file")
    if not force:
        raise SpecError(f"{flag} already exists; pass --force to replace it" + ("" if out else ", or choose another --name"))


def check_preset_name(name: str) -> None:
    """A preset name becomes a file name in the preset directory and a --model value: ASCII letters,
    digits, '.', '_', '-', starting with a letter or digit (never '', '.', '..', a path outside that
    directory, or '-x', which would read as an option)."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise SpecError(f"--name {name!r}: a preset name is ASCII letters, digits, '.', '_' and '-', starting with "
                        "a letter or digit, at most 100 characters, e.g. my-llama-8b")
