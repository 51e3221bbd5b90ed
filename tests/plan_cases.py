"""Published training runs (tests/data/training_layouts.yaml) as cases a test of `llmcalc plan` can run.

Each usable entry becomes a ``Case``: a model llmcalc can count, a GPU preset, the layout as published,
and the published utilization. Every other entry is in ``EXCLUDED`` with its reason, so no entry is
dropped silently. ``cases()`` reads the file on first call (never at import).

Conventions (the entry's ``layout``, ``layout_derived``, ``notes`` and ``derived`` are read; no
number is invented; every fill that the entry does not state is named in ``Case.assumed``):

- Degrees: an unstated TP/PP/CP/EP is 1; DP is ``layout.dp`` or ``layout_derived.dp``.
  ``global_batch`` is sequences per optimizer step (published, or ``layout_derived``, or global
  tokens / seq). ``micro_batch`` and ``vpp`` are None where the source does not state them
  (Megatron 2021 says "interleaved" without the degree; Llama 3 likewise).
- ``zero``: 0 plain DDP; 1 ZeRO-1 / Megatron distributed optimizer / NeMo distributed_fused_adam;
  2 FSDP SHARD_GRAD_OP, and Llama 3's FSDP whose parameters are "not resharded after forward"
  (gradients and optimizer states sharded, parameters whole from forward to backward: the ZeRO-2
  memory picture during the step); 3 FSDP FULL_SHARD, DeepSpeed ZeRO-3, Megatron FSDP.
  HYBRID_SHARD would be 3 within its shard group (no entry states it: the IBM blog only mentions
  HSDP for checkpointing, and its unstated strategy is taken as FSDP's default FULL_SHARD, assumed).
  NeMo, Megatron-Bridge ("DDP (distributed optimizer not stated)") and the Megatron-Core MoE README:
  1, assumed (their recipes use the distributed optimizer); the Megatron-Core README's
  ``--overlap-param-gather`` requires the distributed optimizer, so 1 there follows from the text.
  Megatron 2021: 0 (no distributed optimizer yet); Korthikanti's DP 8 rows: 0, assumed.
- ``recompute``: "full (...)" and "activation checkpointing" -> full; "selective (attention core
  only)" -> selective; DeepSeek-V3's "RMSNorm and MLA up-projections recomputed" -> selective; the
  IBM blog's "selective (every n blocks)" -> full: it is whole-block checkpointing of a subset of
  blocks (published HFU/MFU 1.14-1.16, i.e. about half the blocks; full would be 4/3), and llmcalc's
  selective (Korthikanti's s x s terms) would save almost nothing under SDPA flash attention, so full
  keeps the memory picture and overstates the recompute time by about 15%. Where the FLOP count
  includes recomputation (Megatron 2021 ZeRO-3 rows, MT-NLG) full is assumed; elsewhere an unstated
  recompute is "none", assumed. Llama 3's 8k rows state none (§3.3.2: "we could pre-train Llama 3 on
  sequences of 8K tokens without activation checkpointing").
- ``sp``: False where TP is 1, and for runs before sequence parallelism existed (Megatron 2021,
  MT-NLG; BLOOM states it). The Megatron-Core README's ``--tp-comm-overlap`` requires it (True).
  NeMo, Megatron-Bridge, the Megatron-Core MoE README and Llama 3 with TP > 1: True, assumed.
- ``dtype``: "fp8" for every FP8 recipe (fp8, fp8-cs, fp8-mx, amp_fp8); "bf16" for 16-bit mixed
  precision (bf16, amp_bf16, "mixed precision", and Megatron 2021's unstated 16-bit type).
- ``mfu`` is model FLOPs (recompute not counted) over the GPU preset's dense BF16 peak; ``mfu_from``
  says where it comes from: "published"; "derived from HFU" (Megatron eq. 3: HFU x
  72(1+s/6h+V/12lh) / 96(1+s/6h+V/16lh), taken from ``measured_derived.mfu`` where the file has it);
  "derived from step time" (Korthikanti's full-recompute rows: the published MFU of the same model
  scaled by the step times); "PaLM's FLOPs x tokens/s / BF16 peak" (NeMo and Megatron-Bridge, which
  publish tokens/s beside a model TFLOP/s of their own count: Megatron-Bridge's counts attention
  causal, half of PaLM's 12LHQT, so its TFLOP/s and the planner's MFU would time the same step
  differently, by up to 21% for Qwen3-30B-A3B at 4k); "model TFLOP/s / BF16 peak" (the Megatron-Core
  MoE README, which gives no tokens/s); for FP8 runs, including MosaicML's FP8 rows whose own MFU is
  over the FP8 peak, the text says "FP8 run": such an MFU can exceed what BF16 could reach; "none:
  ..." with the reason.
- ``tokens_per_gpu_s``: per GPU, else total / GPUs (``measured``, then ``measured_derived``), else
  from a step time (global batch x seq / step / GPUs), else from Megatron's hardware TFLOP/s over
  eq. 3's FLOPs per token (the 2021 ZeRO-3 rows); None where there is no throughput.
- GPUs: A100 80GB (SXM) -> a100-80gb, A100 40GB -> a100-40gb, H100 80GB (SXM; MosaicML, IBM and
  the Megatron-Core README's unstated variant all divide by the SXM peak 989) -> h100-sxm, H800,
  B200, GB200 -> their presets. ``gpus_per_node`` is the NVLink domain: as published; 8 (an HGX/DGX
  board; fewer when the run has fewer GPUs) where not stated, assumed; GB200 72 (the NVL72 rack; the
  entries publish the 4-GPU compute tray), assumed.
- Models: built from the entry's shape with the family's architecture (each family's fields and
  sources are at its builder), or the llmcalc preset the entry names. ``PARAMS_TOLERANCE`` and
  ``PARAMS_EXCEPTIONS`` say how close llmcalc's count comes to the entry's ``params``.

For a test that a published layout fits: llm-foundry's MPT uses flash-attn's fused cross-entropy
(its default loss_fn), so MosaicML rows need llmcalc's ``loss="fused"`` (with the full loss 79 of the
216 go over 80 GiB). With it, every Case with a micro-batch fits llmcalc's memory model (attention
flash) but 7 Megatron-Bridge rows under the assumed recompute "none", which fit with "full": let the
planner choose the fields named in ``assumed``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from llmcalc.flops import palm_per_token
from llmcalc.presets import load_gpu, load_model, model_from_fields
from llmcalc.spec import ModelSpec

DATA = Path(__file__).parent / "data" / "training_layouts.yaml"


class Case(NamedTuple):
    id: str
    group: str
    model: ModelSpec
    gpu: str                  # an llmcalc GPU preset name
    gpus: int
    gpus_per_node: int
    seq: int
    global_batch: int         # sequences per optimizer step
    dtype: str                # "bf16" (16-bit mixed precision) or "fp8"
    tp: int
    pp: int
    cp: int
    dp: int
    ep: int
    vpp: int | None           # virtual stages per pipeline rank; None: not stated
    zero: int                 # 0-3 (module docstring: how FSDP variants map)
    sp: bool
    recompute: str            # none | selective | full
    micro_batch: int | None   # None: not stated
    mfu: float | None         # model FLOPs / dense BF16 peak
    mfu_from: str
    tokens_per_gpu_s: float | None
    source: str               # URL and table
    assumed: tuple[str, ...] = ()  # fields filled by a convention, not stated by the source


# llmcalc's count (params.count(model)["total"]) vs the entry's `params`: within 2%, except the
# models below, whose published size is a rounded name. MosaicML's NumParams column is matched exactly.
# Within 2% though nominal: Megatron's "1T" (1.008T counted, 0.8%) and Llama-2-70B (68.98B, 1.5%).
PARAMS_TOLERANCE = 0.02
PARAMS_EXCEPTIONS = {  # entry model name -> (tolerance, why)
    "Llama-2-7B": (0.04, "the nominal 7B: Llama-2-7B has 6.74B parameters (3.7% less)"),
    "Llama-2-7B architecture": (0.04, "the nominal 7B: Llama-2-7B has 6.74B parameters (3.7% less)"),
    "GPT-1.7B (Megatron)": (0.03, ("Narayanan et al. Table 1 rounds 1.65B (their own 12lh^2(1 + 13/12h + "
                                   "(V+s)/12lh)) up to 1.7B")),
    "GPT-1.7B (Megatron-Core benchmark)": (0.035, ("the README's rounded 1.7B: 1.75B with the untied output layer "
                                                   "(1.48B tied)")),
}


def _ids(*ids: str, reason: str) -> dict[str, str]:
    return dict.fromkeys(ids, reason)


_TITAN_GPU = ("torchtitan's H100s are 96 GB HBM2e at 500 W: no llmcalc preset fits (h100-sxm is 80 GiB at 700 W, "
              "below the 82-85 GiB peaks some of these runs report; h100-nvl is a PCIe card)")
_TITAN_NO_SEQ = _TITAN_GPU + "; sequence length not stated"
_NO_PRESET = "the entry names the model without its shape, and llmcalc has no preset for {}"

EXCLUDED: dict[str, str] = {
    **_ids("megatron2021-ptd-174b-384xa100", "megatron2021-ptd-174b-768xa100", "megatron2021-ptd-174b-1536xa100",
           reason="partial layout: Table 2 gives only TP x PP = 96, not the split"),
    **_ids("megatron2021-ptd-529b-560xa100", "megatron2021-ptd-529b-1120xa100", "megatron2021-ptd-529b-2240xa100",
           reason="partial layout: Table 2 gives only TP x PP = 280, not the split"),
    **_ids("mcore-strong-gpt3-175b-96xh100", "mcore-strong-gpt3-175b-4608xh100",
           reason="strong-scaling endpoint: an MFU with no layout and no model shape"),
    **_ids("nemo2407-gpt3-5b-64xh100-fp8", "nemo2407-gpt3-20b-64xh100-fp8", "nemo2407-gpt3-175b-128xh100-fp8",
           "nemo2407-gpt3-175b-512xh100-fp8", reason=_NO_PRESET.format("NeMo's GPT-3 configurations")),
    **_ids("nemo2407-nemotron-8b-64xh100-fp8", "nemo2407-nemotron-22b-64xh100-fp8",
           "nemo2407-nemotron-340b-128xh100-fp8", reason=_NO_PRESET.format("Nemotron")),
    **_ids(*(f"nemo-longseq-llama3-8b-s{k}k-{k}xb200-cp{cp}" for k, cp in
             ((8, 1), (16, 1), (32, 2), (64, 4), (128, 4), (256, 4), (512, 8), (1024, 16))),
           reason="internally inconsistent: the table's TP x PP x DP x CP is a quarter of the GPU count"),
    **_ids("mbridge2511-gpt-oss-120b-64xgb200-bf16", "mbridge2511-gpt-oss-120b-64xb200-bf16",
           "mbridge2511-gpt-oss-120b-64xgb300-bf16",
           reason=_NO_PRESET.format("gpt-oss-120b")),
    "mbridge2511-gpt-oss-120b-64xh100-bf16": _NO_PRESET.format("gpt-oss-120b") + "; also MBS x GA x DP = 128 "
                                             "is not its global batch 512",
    **_ids("torchtitan-llama31-8b-8xh100-fsdp8-cp1-s32k", "torchtitan-llama31-8b-8xh100-fsdp4-cp2-s64k",
           "torchtitan-llama31-8b-8xh100-fsdp2-cp4-s128k", "torchtitan-llama31-8b-8xh100-fsdp1-cp8-s256k",
           "torchtitan-llama31-405b-512xh100-4d-cp1-s32k", "torchtitan-llama31-405b-512xh100-4d-cp2-s64k",
           "torchtitan-llama31-405b-512xh100-4d-cp4-s128k", "torchtitan-llama31-405b-512xh100-4d-cp8-s256k",
           reason=_TITAN_GPU),
    **_ids(*(f"torchtitan-llama31-8b-{n}xh100-fsdp{c}" for n in (8, 128) for c in ("", "-compile", "-compile-float8")),
           "torchtitan-llama31-70b-256xh100-2d", "torchtitan-llama31-70b-256xh100-2d-asynctp",
           "torchtitan-llama31-405b-512xh100-3d-1f1b", "torchtitan-llama31-405b-512xh100-3d-interleaved-1f1b",
           *(f"torchtitan-asynctp-llama3-{size}-{n}xh100-{dtype}-{tp}" for size, n in (("70b", 256), ("8b", 64))
             for dtype in ("bf16", "fp8-tensorwise", "fp8-rowwise") for tp in ("tp", "asynctp")),
           reason=_TITAN_NO_SEQ),
    **_ids("torchtitan-trainy-llama31-8b-32xh200-fsdp-float8", "torchtitan-trainy-llama31-8b-64xh200-fsdp-float8",
           reason="sequence length not stated (torchtitan's llama3_8b.toml default, not restated); "
                  "float8 linears with no model-FLOPs figure"),
    **_ids("ibm-fsdp-llama2-34b-128xa100", "ibm-fsdp-llama2-34b-96xh100",
           reason=_NO_PRESET.format("Llama-2-34B (never released)")),
    "opt-175b-992xa100": "partial layout: FSDP with Megatron TP of unstated degree; no global batch in sequences",
    "palm-540b-6144xtpuv4": "TPU v4, not a GPU",
    "gopher-280b-4096xtpuv3": "TPU v3, not a GPU; no layout, sequence or model shape",
    "gpt3-175b-v100": "an MFU anchor only: no layout, GPU count, sequence or model shape",
    "deepseek-v2-236b-h800": "GPU count not stated; " + _NO_PRESET.format("DeepSeek-V2"),
}


# -- models ---------------------------------------------------------------------------------------

def _shape(m: dict) -> dict:
    """The entry's shape in ModelSpec's (Hugging Face) field names."""
    return {"hidden_size": m["hidden"], "num_hidden_layers": m["layers"], "num_attention_heads": m["heads"],
            "num_key_value_heads": m["kv_heads"] or m["heads"], "vocab_size": m["vocab"],
            "intermediate_size": m["ffn"] or 4 * m["hidden"]}


def megatron_gpt(entry: dict, tied: bool = True) -> ModelSpec:
    """Megatron-LM's GPT (Narayanan et al. 2021, Korthikanti et al. 2022, MT-NLG, the Megatron-Core
    README): GPT-2 blocks as Megatron builds them by default (megatron/arguments.py): learned absolute
    positions of the sequence length, pre-LayerNorm with bias, biases on every linear, GELU MLP of
    ffn_hidden_size = 4h when unset, attention and hidden dropout 0.1, input embedding shared with
    the output layer (share_embeddings_and_output_weights). Shapes from the entry's table."""
    m = entry["model"]
    fields = {**_shape(m), "max_position_embeddings": entry["seq"], "mlp_type": "plain", "hidden_act": "gelu",
              "norm_type": "layernorm", "norm_bias": True, "position_embedding": "learned",
              "tie_word_embeddings": tied, "attention_bias": True, "attention_out_bias": True, "mlp_bias": True,
              "dropout": 0.1, "source": entry["source"]}
    return model_from_fields(m["name"], fields, entry["id"])


def mt_nlg(entry: dict) -> ModelSpec:
    """MT-NLG 530B: the entry gives layers/hidden/heads only. Its shape is the one Korthikanti et al.
    benchmark as "GPT-530B (MT-NLG shape)" (this file, korthikanti2022-530b-*): ffn 81920 = 4h,
    vocab 51200 (GPT-2's 50257 padded by Megatron)."""
    shaped = {**entry, "model": {**entry["model"], "ffn": 4 * entry["model"]["hidden"], "vocab": 51200}}
    return megatron_gpt(shaped)


def megatron_core_gpt(entry: dict) -> ModelSpec:
    """The Megatron-Core README's weak-scaling GPTs: vocab 131072 and seq 4096 (README text), ffn not
    given (Megatron's 4h default; a SwiGLU of 8h/3 has the same count). The output layer is untied
    (--untie-embeddings-and-output-weights): tied, GPT-1.7B would count 1.48B, untied 1.75B."""
    return megatron_gpt(entry, tied=False)


def mpt(entry: dict) -> ModelSpec:
    """MPT as llm-foundry's benchmark yamls build it (scripts/train/yamls/pretrain/mpt-*.yaml at
    4952183: d_model, n_heads, n_layers, expansion_ratio 4, vocab 50368, max_seq_len = the row's
    seq; nothing else set, so MPTConfig's defaults hold): learned positions (learned_pos_emb true,
    no ALiBi), biases everywhere (no_bias false), LayerNorm with bias, GELU, tied head, no dropout.
    Unlike the released MPT-7B (ALiBi, no biases); the table's NumParams column matches this count
    exactly and grows with seq by seq x d_model, the position table."""
    fields = {**_shape(entry["model"]), "max_position_embeddings": entry["seq"], "mlp_type": "plain",
              "hidden_act": "gelu", "norm_type": "layernorm", "norm_bias": True, "position_embedding": "learned",
              "tie_word_embeddings": True, "attention_bias": True, "attention_out_bias": True, "mlp_bias": True,
              "dropout": 0.0, "source": entry["source"]}
    return model_from_fields(entry["model"]["name"], fields, entry["id"])


def bloom(entry: dict) -> ModelSpec:
    """BLOOM-176B: the bloomz-7b1 preset's architecture (presets/models/bloom.yaml: ALiBi, a LayerNorm
    after the embedding, biases, tied head) at the entry's shape (tr11-176B-ml README: 70 layers,
    hidden 14336, 112 heads, vocab 250680 as padded by Megatron-DeepSpeed); dropout 0 (tr11 config)."""
    base = dataclasses.asdict(load_model("bloomz-7b1"))
    keep = {k: v for k, v in base.items() if k not in ("name", "aliases", "notes", "quant_skip")}
    fields = {**keep, **_shape(entry["model"]), "max_position_embeddings": entry["seq"], "source": entry["source"]}
    return model_from_fields(entry["model"]["name"], fields, entry["id"])


# The entry's model name -> the llmcalc preset with that architecture (Llama 3.1 405B's shape is in
# the entry too; tests/test_plan_cases.py checks every preset against the shape an entry gives).
PRESETS = {
    "Llama-2-7B": "llama-2-7b", "Llama-2-7B architecture": "llama-2-7b",
    "Llama-2-13B": "llama-2-13b", "Llama-2-13B architecture": "llama-2-13b",
    "Llama-2-70B": "llama-2-70b", "Llama-2-70B architecture": "llama-2-70b",
    "Llama-3-8B": "llama-3-8b", "Llama-3-70B": "llama-3-70b", "Llama-3.1-405B": "llama-3.1-405b",
    "DeepSeek-V3": "deepseek-v3", "Mixtral-8x7B": "mixtral-8x7b", "Mixtral-8x22B": "mixtral-8x22b",
    "Qwen3-30B-A3B": "qwen3-30b-a3b", "Qwen3-235B-A22B": "qwen3-235b-a22b",
}


def preset(entry: dict) -> ModelSpec:
    """The named preset; a rotary model trained past its config's context (NeMo's 1M-token
    Llama-2-7B) gets max_position_embeddings = seq, which no count depends on."""
    spec = load_model(PRESETS[entry["model"]["name"]])
    if spec.position_embedding == "rotary" and entry["seq"] > spec.max_position_embeddings:
        spec = dataclasses.replace(spec, max_position_embeddings=entry["seq"])
    return spec


# -- per-group conventions ------------------------------------------------------------------------

class Conventions(NamedTuple):
    model: Callable[[dict], ModelSpec]
    mfu: str                  # how the MFU is read: published | derived | hfu | tflops | none
    zero: int | None = None   # when the entry states neither zero nor an FSDP strategy
    zero_assumed: bool = True
    sp: bool | None = None    # with TP > 1 when the entry does not say; None: must be stated
    sp_assumed: bool = True
    recompute: str = "none"   # when the entry does not say
    recompute_assumed: bool = True


GROUPS = {
    "llama3-paper": Conventions(preset, "published", sp=True),
    "megatron-lm-2021": Conventions(megatron_gpt, "hfu", zero=0, zero_assumed=False, sp=False, sp_assumed=False,
                                    recompute="full"),
    "korthikanti-2022": Conventions(megatron_gpt, "published", zero=0),
    "megatron-core-readme": Conventions(megatron_core_gpt, "published", zero=1, zero_assumed=False, sp=True,
                                        sp_assumed=False),
    "mosaicml-llm-foundry": Conventions(mpt, "published"),
    "nemo-24.07": Conventions(preset, "tflops", zero=1, sp=True),
    "nemo-long-sequence": Conventions(preset, "none: the table's 'TFLOPS / GPU' is not said to be model FLOPs "
                                              "(nor how attention is counted), and it gives no tokens/s",
                                      zero=1, sp=True),
    "megatron-bridge-25.11": Conventions(preset, "tflops", zero=1, sp=True),
    "pytorch-fsdp-blog": Conventions(preset, "published", zero=3),
    "bloom": Conventions(bloom, "hfu"),
    "mt-nlg": Conventions(mt_nlg, "hfu", sp=False, sp_assumed=False, recompute="full"),
    "deepseek": Conventions(preset, "none: DeepSeek-V3 publishes no MFU or TFLOP/s"),
    "megatron-core-moe": Conventions(preset, "tflops", zero=1, sp=True),
}

GPUS = {"A100-SXM-80GB": "a100-80gb", "A100-80GB": "a100-80gb", "A100-40GB": "a100-40gb",
        "H100-80GB": "h100-sxm", "H100-80GB-HBM3": "h100-sxm", "H100 (variant not stated)": "h100-sxm",
        "H100-SXM-80GB": "h100-sxm", "H800": "h800", "B200": "b200", "GB200": "gb200",
        "GB300": "gb300"}


def gpu_preset(described: str) -> str:
    """The preset for the entry's GPU text ("H100-SXM-80GB (DGX-H100)" -> h100-sxm)."""
    key = described if described in GPUS else described.split(" (")[0]
    return GPUS[key]


# -- layout ---------------------------------------------------------------------------------------

def _zero(entry: dict, conv: Conventions) -> tuple[int, bool]:
    """(ZeRO stage, assumed?) from the entry's zero / fsdp text (module docstring: the mapping)."""
    layout = entry["layout"]
    fsdp = layout["fsdp"] or ""
    if layout["zero"] is not None:
        return layout["zero"], False
    if "FULL_SHARD" in fsdp or fsdp == "Megatron FSDP":
        return 3, False
    if "SHARD_GRAD_OP" in fsdp or "not resharded after forward" in fsdp:
        return 2, False
    if conv.zero is None:
        raise ValueError(f"{entry['id']}: no ZeRO stage or FSDP strategy, and no convention for {entry['group']}")
    dp = layout["dp"] or entry["layout_derived"].get("dp") or 1
    return conv.zero, conv.zero_assumed and dp > 1


def _recompute(entry: dict, conv: Conventions) -> tuple[str, bool]:
    said = (entry["layout"]["recompute"] or "").lower()
    if not said:
        return conv.recompute, conv.recompute_assumed
    if said.startswith("full") or said == "selective (every n blocks)":
        return "full", False
    if said.startswith("selective") or "recomputed" in said:
        return "selective", False
    if said == "none":
        return "none", False
    raise ValueError(f"{entry['id']}: recompute {said!r} has no mapping")


def _sp(entry: dict, conv: Conventions, tp: int) -> tuple[bool, bool]:
    said = entry["layout"]["sp"]
    if said is not None:
        return said, False
    if tp == 1:
        return False, False
    if conv.sp is None:
        raise ValueError(f"{entry['id']}: TP {tp} without a stated sequence parallelism")
    return conv.sp, conv.sp_assumed


def _degrees(entry: dict) -> dict[str, int]:
    layout, derived = entry["layout"], entry["layout_derived"]
    degrees = {k: layout[k] or 1 for k in ("tp", "pp", "cp", "ep")}
    degrees["dp"] = layout["dp"] or derived.get("dp") or derived.get("dp_for_dense")
    for k, v in degrees.items():
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{entry['id']}: {k} = {v!r} is not a degree")
    return degrees


def _gpus_per_node(entry: dict, gpu: str) -> tuple[int, bool]:
    """GPUs that share the NVLink domain: as published; 8 (an HGX/DGX board) where not stated; for
    GB200 and GB300 the 72-GPU NVL72 rack (the entry's 4 is the compute tray; its note names the rack)."""
    if gpu in ("gb200", "gb300"):
        return min(entry["gpus"], 72), True
    if entry["gpus_per_node"] is None:
        return min(entry["gpus"], 8), True
    return entry["gpus_per_node"], False


def _global_batch(entry: dict) -> int:
    derived = entry["layout_derived"]
    sequences = entry["global_batch_sequences"] or derived.get("global_batch_sequences")
    tokens = entry["global_batch_tokens"] or derived.get("global_batch_tokens")
    if sequences is None and tokens is not None and tokens % entry["seq"] == 0:
        sequences = tokens // entry["seq"]
    if not isinstance(sequences, int):
        raise ValueError(f"{entry['id']}: no global batch in sequences")
    return sequences


def _dtype(entry: dict) -> tuple[str, bool]:
    said = entry["dtype"]
    if said is None:
        return "bf16", True
    return ("fp8" if "fp8" in said.lower() else "bf16"), False


# -- utilization ----------------------------------------------------------------------------------

def eq3_model_over_hardware(m: dict, seq: int) -> float:
    """Narayanan et al. eq. 3 counts 96Bslh^2(1 + s/6h + V/16lh) FLOPs with the recompute forward;
    model FLOPs are 72Bslh^2(1 + s/6h + V/12lh). Their ratio turns an HFU into an MFU."""
    s, h, n, v = seq, m["hidden"], m["layers"], m["vocab"] or 51200
    return 72 * (1 + s / (6 * h) + v / (12 * n * h)) / (96 * (1 + s / (6 * h) + v / (16 * n * h)))


def eq3_hardware_flops_per_token(m: dict, seq: int) -> float:
    s, h, n, v = seq, m["hidden"], m["layers"], m["vocab"] or 51200
    return 96 * n * h * h * (1 + s / (6 * h) + v / (16 * n * h))


def _mfu(entry: dict, rule: str, bf16_peak: float, dtype: str) -> tuple[float | None, str]:
    measured, derived = entry["measured"], entry["measured_derived"]
    fp8 = " (FP8 run)" if dtype == "fp8" else ""
    if rule == "published" and dtype == "bf16":
        if measured["mfu"] is not None:
            return measured["mfu"], "published"
        if derived.get("mfu") is not None:
            return derived["mfu"], "derived from step time"
    if rule in ("published", "tflops"):
        if measured["tflops_per_gpu"] is None:
            return None, "none: layout only, no throughput published"
        return measured["tflops_per_gpu"] / bf16_peak, f"model TFLOP/s / BF16 peak{fp8}"
    if rule == "hfu":
        if derived.get("mfu") is not None:
            return derived["mfu"], "derived from HFU"
        return derived["hfu"] * eq3_model_over_hardware(entry["model"], entry["seq"]), "derived from HFU"
    if rule.startswith("none"):
        return None, rule
    raise ValueError(f"{entry['id']}: no MFU by rule {rule!r}")


def _tokens_per_gpu_s(entry: dict, global_batch: int) -> float | None:
    measured, derived, gpus = entry["measured"], entry["measured_derived"], entry["gpus"]
    for per_gpu, total in ((measured["tokens_per_s_per_gpu"], measured["tokens_per_s"]),
                           (derived.get("tokens_per_s_per_gpu"), derived.get("tokens_per_s"))):
        if per_gpu is not None:
            return float(per_gpu)
        if total is not None:
            return total / gpus
    step = measured["step_time_s"] or derived.get("step_time_s")
    if step:
        return global_batch * entry["seq"] / step / gpus
    if entry["group"] == "megatron-lm-2021" and measured["tflops_per_gpu"]:
        return measured["tflops_per_gpu"] * 1e12 / eq3_hardware_flops_per_token(entry["model"], entry["seq"])
    return None


# -- cases ----------------------------------------------------------------------------------------

def case(entry: dict) -> Case:
    """The Case for one entry of training_layouts.yaml (ValueError or KeyError if it cannot be one)."""
    conv = GROUPS[entry["group"]]
    gpu = gpu_preset(entry["gpu"])
    degrees = _degrees(entry)
    zero, zero_assumed = _zero(entry, conv)
    recompute, recompute_assumed = _recompute(entry, conv)
    sp, sp_assumed = _sp(entry, conv, degrees["tp"])
    dtype, dtype_assumed = _dtype(entry)
    global_batch = _global_batch(entry)
    peak = load_gpu(gpu).peak("bf16")
    mfu, mfu_from = _mfu(entry, conv.mfu, peak / 1e12, dtype)
    model, tokens = conv.model(entry), _tokens_per_gpu_s(entry, global_batch)
    if conv.mfu == "tflops" and mfu is not None and tokens:  # the planner's own FLOP count over the same seconds
        mfu, mfu_from = palm_per_token(model, entry["seq"]) * tokens / peak, "PaLM's FLOPs x tokens/s / BF16 peak" + (
            " (FP8 run)" if dtype == "fp8" else "")
    per_node, per_node_assumed = _gpus_per_node(entry, gpu)
    assumed = (("gpus_per_node",) * per_node_assumed + ("zero",) * zero_assumed
               + ("sp",) * sp_assumed + ("recompute",) * recompute_assumed + ("dtype",) * dtype_assumed)
    return Case(id=entry["id"], group=entry["group"], model=model, gpu=gpu, gpus=entry["gpus"],
                gpus_per_node=per_node, seq=entry["seq"], global_batch=global_batch, dtype=dtype, **degrees,
                vpp=entry["layout"]["vpp"], zero=zero, sp=sp, recompute=recompute,
                micro_batch=entry["layout"]["micro_batch"], mfu=mfu, mfu_from=mfu_from,
                tokens_per_gpu_s=tokens,
                source=f"{entry['source']} ({entry['where']})", assumed=assumed)


@functools.lru_cache(maxsize=1)
def entries() -> tuple[dict, ...]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return tuple(yaml.load(DATA.read_text(encoding="utf-8"), Loader=loader))


@functools.lru_cache(maxsize=1)
def _all_cases() -> tuple[Case, ...]:
    return tuple(case(e) for e in entries() if e["id"] not in EXCLUDED)


def cases(groups: tuple[str, ...] | None = None) -> list[Case]:
    """Every usable entry as a Case, in file order; ``groups`` keeps only those groups."""
    return [c for c in _all_cases() if groups is None or c.group in groups]
