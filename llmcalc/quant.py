"""Quantized checkpoints as they ship: a config.json's ``quantization_config`` read into ModelSpec
fields, the bytes each quantized weight really costs, and the modules a checkpoint keeps in 16 bits.

Layouts (what vLLM holds after loading; AutoGPTQ, AutoAWQ, compressed-tensors, bitsandbytes and
DeepSeek-V3's fp8 format, read from their sources): a b-bit weight costs b/8 bytes, plus one scale
per group of ``group_size`` input weights (fp16/bf16 for GPTQ, AWQ and compressed-tensors int4; fp32
for fp8 and bitsandbytes), plus a b-bit zero point per group when asymmetric (AWQ; GPTQ's symmetric
zeros are dropped by Marlin). Per-channel formats hold one scale per output row, per-tensor ones a
single scale, fp8 block formats one fp32 scale per 128 x 128 block. Embeddings, the LM head, norms
and MoE routers stay 16-bit; so do the modules the config lists (``modules_to_not_convert``,
``ignore``, ``ignored_layers``, ``llm_int8_skip_modules``) and any named with ``--keep-16bit``.
"""

from __future__ import annotations

import functools
import re
from typing import Any, NamedTuple

from .dtypes import DTYPE_BYTES
from .spec import ModelSpec, SpecError

PER_CHANNEL, PER_TENSOR = 0, -1  # quant_group_size values besides a group of input weights
# Scale bytes: fp32 for 8-bit formats (int8 W8A8, fp8), the model's 16-bit dtype for sub-byte
# ones (compressed-tensors W4A16); except GPTQ and AWQ (fp16 at any width) and bitsandbytes (fp32
# absmax; vLLM undoes double quantization at load).
SCALE_BYTES = {"gptq": 2, "awq": 2, "bitsandbytes": 4}
_BITS = {(4, "int"): "int4", (8, "int"): "int8", (8, "float"): "fp8", (4, "float"): "fp4"}


class WeightFormat(NamedTuple):
    method: str  # gptq | awq | compressed-tensors | fp8 | fbgemm_fp8 | bitsandbytes | modelopt
    dtype: str
    group_size: int | None  # weights per scale; 0 one per output channel; -1 one per tensor; None no scales
    zero_points: bool
    skip: tuple[str, ...]  # modules kept in 16 bits

    def bytes_per_weight(self, fan_in: int) -> float:
        """Bytes per stored weight, scales and zero points included; per-channel scales are spread
        over ``fan_in`` inputs (the hidden size: the MLP's down projection, wider, pays less); fp8
        groups are 2-D blocks (group_size x group_size), the only grouping fp8 checkpoints use."""
        b = DTYPE_BYTES[self.dtype]
        scale = SCALE_BYTES.get(self.method) or (4 if b >= 1 else 2)
        g = self.group_size
        if g is None or g == PER_TENSOR:
            return b
        if g == PER_CHANNEL:
            return b + scale / fan_in
        if self.dtype == "fp8":
            return b + scale / (g * g)
        return b + (scale + (b if self.zero_points else 0)) / g


def checkpoint_format(m: ModelSpec, keep: tuple[str, ...] = ()) -> WeightFormat:
    """The model's own checkpoint format (ModelSpec quant_* fields), with ``keep`` added to its skips."""
    return WeightFormat(m.quant_method, m.quant_dtype, m.quant_group_size, m.quant_zero_points,
                        tuple(m.quant_skip) + tuple(keep))


def checkpoint_layout(m: ModelSpec, keep: tuple[str, ...] = ()) -> tuple[WeightFormat, float]:
    """(the checkpoint's format with ``keep`` added to its skips, the share of the linears kept 16-bit): what
    ParamSplit.weight_bytes needs to size the weights as they ship (`memory --mode infer`, `params`)."""
    fmt = checkpoint_format(m, keep)
    return fmt, kept_fraction(m, fmt.skip)


# -- which modules a skip list names -----------------------------------------------------------------

def block_modules(m: ModelSpec, layer: int, moe: bool) -> dict[str, float]:
    """Hugging Face module names of one layer's quantizable linears and their weights (Llama naming;
    experts under mlp.experts, every expert together)."""
    from .params import attention_linears, mlp_linears

    hf = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "proj": "o_proj", "q_a": "q_a_proj", "q_b": "q_b_proj",
          "kv_a": "kv_a_proj_with_mqa", "kv_b": "kv_b_proj", "gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
    prefix = f"model.layers.{layer}"
    out = {f"{prefix}.self_attn.{hf[k]}": lin.weight for k, lin in attention_linears(m).items()}
    if not moe:
        out.update({f"{prefix}.mlp.{hf[k]}": lin.weight for k, lin in mlp_linears(m, m.intermediate_size).items()})
        return out
    out.update({f"{prefix}.mlp.experts.{hf[k]}": lin.weight * m.num_experts
                for k, lin in mlp_linears(m, m.expert_size, False).items()})
    if m.shared_expert_size:
        out.update({f"{prefix}.mlp.shared_experts.{hf[k]}": lin.weight
                    for k, lin in mlp_linears(m, m.shared_expert_size, False).items()})
    return out


def matches(name: str, pattern: str) -> bool:
    """compressed-tensors' ``re:`` regexes; otherwise a dotted part of the name (AWQ and vLLM match
    substrings of module names: "mlp.gate" names the router, not mlp.gate_proj)."""
    return _matcher((pattern,))(name) is not None


# A group that repeats something repeated ("(a*)*", "(a+){2,}") can backtrack for exponential time.
_NESTED_REPEAT = re.compile(r"\([^()]*[*+}][^()]*\)\s*[*+{]")


def check_patterns(patterns: tuple[str, ...], where: str) -> None:
    """Each ``re:`` pattern compiles and cannot backtrack without end; else a one-line SpecError."""
    if len(patterns) > 64:  # every module of every layer is matched against them all
        raise SpecError(f"{where}: {len(patterns)} patterns; at most 64 (one re: pattern can name many modules)")
    for pattern in patterns:
        if not pattern.startswith("re:"):
            continue
        body = pattern[3:]
        if len(body) > 200 or _NESTED_REPEAT.search(body):
            raise SpecError(f"{where}: {pattern!r} repeats a repeated group (or is over 200 characters), which "
                            "can take exponential time; write it without nested repetition")
        try:
            re.compile(body)
        except re.error as exc:
            raise SpecError(f"{where}: {pattern!r} is not a regular expression: {exc}") from None


@functools.lru_cache(maxsize=64)
def _matcher(patterns: tuple[str, ...]):
    """One compiled regex for all the patterns: ``re:`` ones anchored at the start (re.match), dotted
    names as whole dotted parts; its ``search`` is the test (one pass per module name)."""
    check_patterns(patterns, "--keep-16bit")
    parts = [f"^(?:{p[3:]})" if p.startswith("re:") else rf"(?:^|\.){re.escape(p.strip('.'))}(?:\.|$)"
             for p in patterns]
    return re.compile("|".join(parts) or "(?!)").search


@functools.lru_cache(maxsize=64)  # the limits search asks again for every probe
def kept_fraction(m: ModelSpec, skip: tuple[str, ...]) -> float:
    """Share of the blocks' quantizable weights that ``skip`` keeps in 16 bits."""
    if not skip:
        return 0.0
    kept = total = 0.0
    found = _matcher(skip)
    kinds = {moe: {name.split(".", 3)[3]: w for name, w in block_modules(m, 0, moe).items()}
             for moe in {m.is_moe and layer >= m.num_dense_layers for layer in (0, m.num_hidden_layers - 1)}}
    for layer in range(m.num_hidden_layers):
        for suffix, weights in kinds[m.is_moe and layer >= m.num_dense_layers].items():
            total += weights
            if found(f"model.layers.{layer}.{suffix}"):
                kept += weights
    return kept / total if total else 0.0


def unmatched(m: ModelSpec, patterns: tuple[str, ...]) -> list[str]:
    """The dotted names in ``patterns`` that name no module of ``m`` (a typo: ``lm_haed``). A dotted
    name can only differ between layers by the layer number it spells, so the layers it names (and the
    first and last) decide it exactly; ``re:`` patterns are the user's own and are not second-guessed."""
    last = m.num_hidden_layers - 1
    out = []
    for pattern in patterns:
        if pattern.startswith("re:"):
            continue
        layers = {0, last} | {int(part) for part in pattern.split(".") if part.isdigit() and int(part) <= last}
        names = ["lm_head", "model.embed_tokens", "model.norm",
                 *(name for layer in layers for name in block_modules(m, layer, m.is_moe and layer >= m.num_dense_layers))]
        names += [name.rsplit(".", 1)[0] for name in names]  # parents: model.layers.0.mlp
        if not any(_matcher((pattern,))(name) for name in names):
            out.append(pattern)
    return out


# -- reading quantization_config -----------------------------------------------------------------

def from_quantization_config(qc: Any, where: str) -> dict:
    """ModelSpec quant_* fields from a config.json ``quantization_config`` mapping."""
    if not isinstance(qc, dict):
        raise SpecError(f"{where}: quantization_config must be a mapping, got {type(qc).__name__}")
    method = str(qc.get("quant_method", "")).lower()
    reader = _READERS.get(method)
    if reader is None:
        raise SpecError(f"{where}: quantization_config quant_method {method or 'missing'!r} is not supported; "
                        f"supported: {', '.join(sorted(_READERS))} (or size it with --dtype)")
    fields = reader(qc, where)
    skip = fields.pop("skip", None) or []
    if not isinstance(skip, (list, tuple)) or not all(isinstance(x, str) for x in skip):
        raise SpecError(f"{where}: quantization_config's list of unquantized modules must be strings, got {skip!r}")
    check_patterns(tuple(skip), f"{where}: quantization_config")
    return {"quant_method": method, "quant_skip": tuple(skip), **fields}


def _bits(qc: dict, where: str, key: str = "bits", kind: str = "int") -> str:
    bits = qc.get(key, 4)
    dtype = _BITS.get((bits, kind)) if isinstance(bits, int) and not isinstance(bits, bool) else None
    if dtype is None:
        raise SpecError(f"{where}: quantization_config {key} {bits!r} ({kind}) is not a format llmcalc sizes "
                        "(4 or 8 bits)")
    return dtype


def _group(value: Any, where: str = "quantization_config", key: str = "group_size") -> int:
    """A group size: a whole number of weights, or -1 / null for one scale per output channel."""
    if value in (None, -1) and not isinstance(value, bool):
        return PER_CHANNEL
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"{where}: quantization_config {key} must be a whole number of weights (or -1), got {value!r}")
    return value


def _block(value: Any, where: str, key: str) -> int:
    """The first side of a block shape ([128, 128]); a list of whole numbers."""
    if not isinstance(value, list) or not value:
        raise SpecError(f"{where}: quantization_config {key} must be a list such as [128, 128], got {value!r}")
    return _group(value[0], where, key)


def _gptq(qc: dict, where: str) -> dict:
    dynamic = qc.get("dynamic") or {}  # GPTQModel: "-:regex" rules leave modules unquantized
    if not isinstance(dynamic, dict):
        raise SpecError(f"{where}: quantization_config dynamic must map module patterns to settings, got {dynamic!r}")
    skip = ["re:" + k[2:] for k in dynamic if isinstance(k, str) and k.startswith("-:")]
    return {"quant_dtype": _bits(qc, where), "quant_group_size": _group(qc.get("group_size", 128), where),
            "quant_zero_points": qc.get("sym") is False, "skip": skip}


def _awq(qc: dict, where: str) -> dict:
    return {"quant_dtype": _bits(qc, where, "bits" if "bits" in qc else "w_bit"),
            "quant_group_size": _group(qc.get("group_size", qc.get("q_group_size", 128)), where),
            "quant_zero_points": qc.get("zero_point", True) is not False, "skip": qc.get("modules_to_not_convert")}


def _compressed_tensors(qc: dict, where: str) -> dict:
    groups = qc.get("config_groups") or {}
    first = next(iter(groups.values()), None) if isinstance(groups, dict) else None
    weights = first.get("weights") if isinstance(first, dict) else None
    if not isinstance(weights, dict):
        raise SpecError(f"{where}: compressed-tensors quantization_config has no config_groups weights")
    dtype = _bits(weights, where, "num_bits", str(weights.get("type", "int")))
    strategy = weights.get("strategy", "tensor")
    if strategy not in ("tensor", "channel", "group", "block", "tensor_group"):
        raise SpecError(f"{where}: compressed-tensors strategy {strategy!r} is not tensor, channel, group or block")
    group = {"tensor": PER_TENSOR, "channel": PER_CHANNEL}.get(strategy)
    if group is None:
        group = _block(weights["block_structure"], where, "block_structure") if weights.get("block_structure") \
            else _group(weights.get("group_size") or 128, where)
    return {"quant_dtype": dtype, "quant_group_size": group,
            "quant_zero_points": weights.get("symmetric", True) is False, "skip": qc.get("ignore")}


def _fp8(qc: dict, where: str) -> dict:
    block = qc.get("weight_block_size")
    return {"quant_dtype": "fp8", "quant_group_size": _block(block, where, "weight_block_size") if block else PER_TENSOR,
            "skip": qc.get("ignored_layers") or qc.get("modules_to_not_convert")}


def _fbgemm_fp8(qc: dict, where: str) -> dict:
    return {"quant_dtype": "fp8", "quant_group_size": PER_CHANNEL, "skip": qc.get("modules_to_not_convert")}


def _bitsandbytes(qc: dict, where: str) -> dict:
    eight = qc.get("load_in_8bit") is True or qc.get("_load_in_8bit") is True
    return {"quant_dtype": "int8" if eight else "fp4", "quant_group_size": PER_CHANNEL if eight else 64,
            "skip": qc.get("llm_int8_skip_modules")}


def _modelopt(qc: dict, where: str) -> dict:
    algo = str(qc.get("quant_algo", "FP8")).upper()
    if "FP8" not in algo:
        raise SpecError(f"{where}: modelopt quant_algo {algo!r} is not sized by llmcalc (FP8 only)")
    return {"quant_dtype": "fp8", "quant_group_size": PER_CHANNEL if "CHANNEL" in algo else PER_TENSOR,
            "skip": qc.get("exclude_modules")}


_READERS = {"gptq": _gptq, "awq": _awq, "compressed-tensors": _compressed_tensors, "fp8": _fp8,
            "fbgemm_fp8": _fbgemm_fp8, "bitsandbytes": _bitsandbytes, "modelopt": _modelopt}
