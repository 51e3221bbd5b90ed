"""The fields of a GPU preset file: checked, then turned into a GPUSpec (from_fields).

Each figure carries its unit in its key (memory_gib, memory_bandwidth_tb_s, tflops per dtype); only
GPU lookups load this module.
"""

from __future__ import annotations

from .presets import PresetError, _did_you_mean, _is_number
from .gpuspec import DEFAULT_NETWORK_BANDWIDTH, DEFAULT_NODE_GPUS, GPUSpec
from .spec import SpecError

GPU_KEYS = {"vendor", "aliases", "memory_gib", "memory_gb", "device_memory_gib", "device_memory_source",
            "memory_bandwidth_tb_s", "interconnect_gb_s", "link_gb_s", "node_gpus", "network_gb_s", "tflops", "tdp_w",
            "attention_share", "attention_kernels", "matmul_tflops", "compute_capability", "sm_count", "host_gb_s",
            "host_memory_gib", "acc16_tflops", "source", "notes"}
_NUMBERS = ("memory_gib", "memory_gb", "device_memory_gib", "memory_bandwidth_tb_s", "interconnect_gb_s",
            "link_gb_s", "network_gb_s", "tdp_w", "attention_share", "compute_capability", "host_gb_s", "host_memory_gib")
_NON_NEGATIVE = ("tdp_w", "interconnect_gb_s", "link_gb_s", "network_gb_s", "host_gb_s", "host_memory_gib")


def from_fields(name: str, fields: dict, where: str) -> GPUSpec:
    """A GPUSpec from preset fields (units in the key names); every error one line naming the file."""
    check(name, fields, where)
    try:
        return build(name, fields, where)
    except KeyError as exc:
        raise PresetError(f"{where}: GPU {name!r} is missing {exc.args[0]}") from None
    except PresetError:
        raise
    except SpecError as exc:  # GPUSpec's own validation
        raise PresetError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise PresetError(f"{where}: GPU {name!r} has a non-numeric figure ({exc})") from None


def check(name: str, fields: dict, where: str) -> None:
    """Known keys only, exactly one memory key, numbers (or null) where numbers belong."""
    unknown = sorted(set(fields) - GPU_KEYS)
    if unknown:
        hint = _did_you_mean(unknown[0], sorted(GPU_KEYS))
        raise PresetError(f"{where}: unknown field {unknown[0]!r} in GPU {name!r}{hint}")
    if sum(k in fields for k in ("memory_gib", "memory_gb")) != 1:
        raise PresetError(f"{where}: GPU {name!r} needs exactly one of memory_gib (binary) or memory_gb (decimal)")
    for key in _NUMBERS:
        value = fields.get(key)
        if isinstance(value, bool) or (value is not None and not isinstance(value, (int, float))):
            raise PresetError(f"{where}: {name}.{key} must be a number, got {value!r}")
        if key in _NON_NEGATIVE and value is not None and value < 0:
            raise PresetError(f"{where}: {name}.{key} cannot be negative, got {value!r}")
    for key in ("vendor", "source", "notes", "device_memory_source"):
        if fields.get(key) is not None and not isinstance(fields[key], str):
            raise PresetError(f"{where}: {name}.{key} must be text, got {fields[key]!r}")
    if not isinstance(fields.get("aliases") or [], list):
        raise PresetError(f"{where}: {name}.aliases must be a list of names, got {fields['aliases']!r}")


def _memory_bytes(name: str, fields: dict, where: str) -> int:
    """memory_gib is binary (what the device offers), memory_gb decimal."""
    key = "memory_gib" if "memory_gib" in fields else "memory_gb"
    memory = fields[key] * (2**30 if key == "memory_gib" else 1e9)
    if not 0 < memory < float("inf"):
        raise PresetError(f"{where}: {name}.{key} must be a positive finite number")
    return int(round(memory))


def _peaks(name: str, fields: dict, where: str, key: str = "tflops") -> dict[str, float]:
    """tflops (or matmul_tflops): {dtype: TFLOP/s} -> {dtype: FLOP/s}."""
    tflops = fields[key]
    if not isinstance(tflops, dict):
        raise PresetError(f"{where}: {name}.{key} must map dtypes to TFLOP/s")
    for k, v in tflops.items():
        if not _is_number(v) or not v > 0:  # checked as written, before the FLOP/s it becomes
            raise PresetError(f"{where}: {name}.{key}.{k} must be a positive number of TFLOP/s, got {v!r}")
    return {str(k): float(v) * 1e12 for k, v in tflops.items()}


def _shares(name: str, fields: dict, where: str) -> dict[str, float]:
    """attention_kernels: {kernel: share of the 16-bit peak} for the kernels besides FlashAttention-2."""
    kernels = fields.get("attention_kernels") or {}
    if not isinstance(kernels, dict) or not all(_is_number(v) for v in kernels.values()):
        raise PresetError(f"{where}: {name}.attention_kernels must map kernel names (cudnn, fa3) to fractions of "
                          f"the 16-bit peak, got {kernels!r}")
    return {str(k): float(v) for k, v in kernels.items()}


def build(name: str, fields: dict, where: str) -> GPUSpec:
    memory_bytes = _memory_bytes(name, fields, where)
    peak_flops = _peaks(name, fields, where)
    device = fields.get("device_memory_gib")
    if device is not None and not 0 < device < 2**20:
        raise PresetError(f"{where}: {name}.device_memory_gib must be a positive number of GiB, got {device!r}")
    # The driver reports about the datasheet's figure: a little less (an H100's 79.18 of 80 GiB), or a
    # little more where the datasheet rounds down (TPU v5p: 95.74 GiB of "95 GB"); never 5% more.
    if device is not None and device * 2**30 > 1.05 * memory_bytes:
        raise PresetError(f"{where}: {name}.device_memory_gib {device} is far more than the datasheet's "
                          f"{memory_bytes / 2**30:.2f} GiB; give what the driver reports (torch.cuda.mem_get_info)")
    return GPUSpec(
        name=name,
        memory_bytes=memory_bytes,
        device_memory_bytes=round(device * 2**30) if device is not None else None,
        device_memory_source=str(fields.get("device_memory_source", "")),
        memory_bandwidth=float(fields["memory_bandwidth_tb_s"]) * 1e12,
        interconnect_bandwidth=float(fields.get("interconnect_gb_s") or 0) * 1e9,
        link_bandwidth=float(fields["link_gb_s"]) * 1e9 if fields.get("link_gb_s") else None,
        host_bandwidth=float(fields["host_gb_s"]) * 1e9 if fields.get("host_gb_s") else None,
        host_memory_bytes=round(fields["host_memory_gib"] * 2**30) if fields.get("host_memory_gib") else None,
        node_gpus=_given(fields, "node_gpus", DEFAULT_NODE_GPUS),
        network_bandwidth=_given(fields, "network_gb_s", DEFAULT_NETWORK_BANDWIDTH / 1e9) * 1e9,
        attention_share=fields.get("attention_share"),
        attention_kernels=_shares(name, fields, where),
        matmul_flops=_peaks(name, fields, where, "matmul_tflops") if fields.get("matmul_tflops") is not None else {},
        acc16_flops=_peaks(name, fields, where, "acc16_tflops") if fields.get("acc16_tflops") is not None else {},
        peak_flops=peak_flops,
        compute_capability=fields.get("compute_capability"),
        sm_count=fields.get("sm_count"),
        vendor=str(fields.get("vendor", "")),
        tdp_w=fields.get("tdp_w"),
        source=str(fields.get("source", "")),
        aliases=tuple(str(a) for a in fields.get("aliases") or ()),
        notes=str(fields.get("notes", "")),
    )


def _given(fields: dict, key: str, default: float) -> float:
    """A field's value, or the default where the preset leaves it out (or writes null)."""
    value = fields.get(key)
    return default if value is None else value
