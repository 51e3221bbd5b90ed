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


def import_config(config: str, name: str, out: str | None, generic: bool) -> Path:
    """Write a preset YAML for a Hugging Face config; returns the file written."""
    from . import hfconfig

    check_preset_name(name)
    spec = dataclasses.replace(hfconfig.load(config, generic=generic), name=name)
    if not out and presets.user_dir() is None:
        raise SpecError("no home directory to keep presets in (HOME is unset); set XDG_CONFIG_HOME or pass --out")
    path = Path(out) if out else presets.user_dir() / "models" / f"{name}.yaml"
    if path.exists() and not out:
        raise SpecError(f"{safeio.shown(path)} already exists; choose another --name or pass --out")
    if path.is_dir():
        raise SpecError(f"--out {safeio.shown(path)} is a directory; name the file to write, e.g. {name}.yaml")
    text = presets.model_to_yaml(spec, source=str(config))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot write {safeio.shown(path)}: {exc.strerror or exc}; pass --out with a writable file") from None
    return path


def check_preset_name(name: str) -> None:
    """A preset name becomes a file name in the preset directory: letters, digits, '.', '_', '-' only,
    not starting with a dot (so never '', '.', '..' or a path outside that directory)."""
    if not name or name.startswith(".") or not all(c.isalnum() or c in "._-" for c in name) or len(name) > 100:
        raise SpecError(f"--name {name!r}: a preset name is letters, digits, '.', '_' and '-' (not starting "
                        "with '.', at most 100 characters), e.g. my-llama-8b")
