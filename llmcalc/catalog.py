"""The `presets` command's data: listing, showing and importing presets (no rendering here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from . import presets, safeio
from .params import count
from .spec import SpecError


def listing() -> dict[str, list[dict[str, Any]]]:
    """Key figures per preset, one list per kind (the `presets --json` object): "models" (shape, size),
    "gpus" (memory, bandwidths, peaks, reference node) and "clusters" (GPU, node size, bandwidths per
    GPU one direction), every number in base units (LISTING_UNITS)."""
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
                     "fp8": g.peak_flops.get("fp8"), "interconnect": g.interconnect_bandwidth,
                     "node_gpus": g.node_gpus, "network": g.network_bandwidth})
    return {"models": models, "gpus": gpus, "clusters": _clusters()}


def _clusters() -> list[dict[str, Any]]:
    from .cluster import all_clusters

    return [{"name": c.name, "gpu": c.gpu.name, "gpus_per_node": c.gpus_per_node, "intra": c.intra_bandwidth,
             "network": c.inter_bandwidth} for c in all_clusters()]


# Units of the listing's numeric columns, so renderers format them without guessing from names.
LISTING_UNITS = {"params": "params", "active": "params", "memory": "byte",
                 "memory_bandwidth": "byte/s", "bf16": "FLOP/s", "fp8": "FLOP/s",
                 "interconnect": "byte/s", "network": "byte/s", "intra": "byte/s"}


SHOW_UNITS = {"memory_bytes": "byte", "device_memory_bytes": "byte", "host_memory_bytes": "byte", "memory_bandwidth": "byte/s", "interconnect_bandwidth": "byte/s",
              "link_bandwidth": "byte/s", "host_bandwidth": "byte/s",
              "network_bandwidth": "byte/s", "intra_bandwidth": "byte/s", "inter_bandwidth": "byte/s", "total_params": "params",
              "peak_flops": "FLOP/s", "matmul_flops": "FLOP/s", "acc16_flops": "FLOP/s"}  # a mapping's is its values' (attention_kernels: none)
SHOW_DECIMALS = {"compute_capability": 1}  # a version, 9.0 not 9: tables print these with this many decimals


def show(name: str) -> tuple[str, dict[str, Any]]:
    """("model" | "cluster" | "GPU", every resolved field) for a preset name or file. A name is looked
    up as a model, then a cluster, then a GPU: "gb200-nvl72" is the cluster, though the gb200 GPU lists
    it as an alias too (where `--gpu` reads it)."""
    readers = {"model": _model_fields, "cluster": _cluster_fields, "GPU": _gpu_fields}
    kind = presets.file_kind(name)
    if kind in ("GPU", "cluster"):  # a GPU or cluster file's own errors, not the model reader's
        return kind, readers[kind](name)
    errors = []
    for kind, read in readers.items():
        try:
            return kind, read(name)
        except presets.PresetError as exc:
            errors.append(exc)
    _gpu_counted(name)
    # a model preset that is there but broken says so; an unknown name gets the nearest names of any kind
    unknown = [e for e in errors if isinstance(e, presets.UnknownPreset) and e.suggested]
    raise (unknown[0] if unknown and isinstance(errors[0], presets.UnknownPreset) else errors[0]) from None


def _gpu_counted(name: str) -> None:
    """``4xh100`` names no preset: a count prefixes a cluster (its nodes) or, in --gpu, a GPU (how many)."""
    from .units import counted

    n, rest = counted(name)
    entries, aliases = presets.catalog("gpus")
    if n is not None and (rest in entries or rest in aliases):
        raise presets.PresetError(f"{name!r}: a count ({n}x) prefixes a cluster's nodes (4xdgx-h100) or --gpu's GPUs; "
                                  f"the GPU preset itself: llmcalc presets show {rest}")


def _model_fields(name: str) -> dict[str, Any]:
    spec = presets.load_model(name)
    fields = presets.spec_to_dict(spec)
    if fields.get("head_dim") is None and not spec.is_mla:  # its default: hidden_size / heads
        fields["head_dim"] = spec.qk_head_dim
    return {**fields, "total_params": int(count(spec)["total"])}


def _gpu_fields(name: str) -> dict[str, Any]:
    return presets.spec_to_dict(presets.load_gpu(name))


def _cluster_fields(name: str) -> dict[str, Any]:
    from .cluster import cluster_to_dict, load_cluster

    return cluster_to_dict(load_cluster(name))


def import_config(config: str, name: str, out: str | None, generic: bool, force: bool = False) -> Path:
    """Write a preset YAML for a Hugging Face config; returns the file written.

    An existing file is replaced only with ``force``, and never the config being read; a path that
    is a directory (or ends in '/'), a pipe or a device is refused before anything is opened."""
    from . import hfconfig

    check_preset_name(name)
    if str(config).lower().endswith((".yaml", ".yml")):
        raise SpecError(f"{config}: presets import reads a Hugging Face config.json; a YAML preset needs no import: "
                        f"use it as it is (--model {config}) or copy it into the presets directory")
    spec = dataclasses.replace(hfconfig.load(config, generic=generic), name=name)
    if not out:  # a file elsewhere shadows nothing unless its directory is searched
        _warn_shadow(name)
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


def _warn_shadow(name: str) -> None:
    """User presets come before the shipped ones (presets.py): say when this name will hide a shipped model."""
    try:
        found, path, _ = presets._lookup("models", name)
    except presets.UnknownPreset:
        return
    if presets.builtin_dir() in path.parents:
        import warnings

        same = found == name.strip().lower()
        warnings.warn(f"--name {name} is a shipped model preset's name{'' if same else f' ({found})'}: in the "
                      f"user preset directory it comes first, so --model {name} will mean this file", UserWarning,
                      stacklevel=3)


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
