"""Model and layout specifications: frozen dataclasses, validated once on construction (a GPU's: gpuspec.py).

Field names follow Hugging Face ``config.json`` (``hidden_size``, ``num_key_value_heads``, ``tie_word_embeddings``);
every choice that changes a count (biases, norms, gating, tying) is a field, so one counting mechanism covers
GPT-2, Llama, Mixtral, DeepSeek-V3 and the rest without per-model code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .units import MAX_LAYERS, MAX_NORMS, MAX_QUANTITY


class SpecError(ValueError):
    """A specification that cannot describe a real model or device (exit code 2 in the CLI)."""


MLP_TYPES = ("plain", "gated")  # plain: up -> act -> down (GELU/ReLU); gated: SwiGLU/GeGLU (gate, up, down)
NORM_TYPES = ("layernorm", "rmsnorm")
POSITION_EMBEDDINGS = ("learned", "rotary", "alibi", "none")
QK_NORMS = ("none", "head", "full")  # head: one head_dim norm shared by all heads (Qwen3); full: all heads (OLMo2)


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer, described by the fields that decide its size and cost."""

    name: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    vocab_size: int
    intermediate_size: int
    max_position_embeddings: int
    mlp_type: str
    norm_type: str
    position_embedding: str
    tie_word_embeddings: bool
    attention_bias: bool  # biases on the q, k, v projections
    attention_out_bias: bool  # bias on the output projection
    mlp_bias: bool
    norm_bias: bool = False  # LayerNorm's additive bias (RMSNorm has none)
    norm_affine: bool = True  # False: parameter-free norm (OLMo 1)
    norms_per_layer: int = 2  # hidden-size norms per block: 2 pre-norm, 1 parallel block, 4 Gemma-2
    final_norm: bool = True
    embedding_norm: bool = False  # a norm right after the token embedding (BLOOM)
    # Factorized embedding (OPT-350m's word_embed_proj_dim, ALBERT's embedding_size): tokens are
    # embedded at this width, projected in to hidden_size before the first block and out again
    # before the head (bias-free p x h matrices); the head is p x vocab. None (or hidden_size): none.
    embedding_proj_dim: int | None = None
    qk_norm: str = "none"
    qk_norm_bias: bool | None = None  # LayerNorm bias on the q/k norms; None: same as norm_bias
    num_key_value_heads: int | None = None  # None: multi-head attention (= num_attention_heads)
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    hidden_act: str = "gelu"
    position_offset: int = 0  # extra rows in a learned position table (OPT: 2)
    lm_head_bias: bool = False
    parallel_attn: bool = False  # attention and MLP read the same input (GPT-J, Falcon, PaLM)
    dropout: float = 0.0  # training dropout probability; > 0 means dropout masks are stored
    # Mixture of Experts
    num_experts: int = 0  # routed experts per MoE layer; 0 means a dense model
    num_experts_per_tok: int = 0
    num_shared_experts: int = 0
    moe_intermediate_size: int | None = None  # expert width; None: intermediate_size
    shared_expert_intermediate_size: int | None = None  # None: num_shared_experts * expert width
    shared_expert_gate: bool = False  # a hidden -> 1 sigmoid gate on the shared expert (Qwen2-MoE)
    num_dense_layers: int = 0  # layers that keep a dense MLP (DeepSeek's first_k_dense_replace)
    router_bias: bool = False  # a per-expert bias in the router (DeepSeek-V3's score correction)
    # Multi-head Latent Attention (DeepSeek-V2/V3); kv_lora_rank set means MLA
    q_lora_rank: int | None = None
    kv_lora_rank: int | None = None
    qk_nope_head_dim: int | None = None
    qk_rope_head_dim: int | None = None
    v_head_dim: int | None = None
    # Sliding-window attention
    sliding_window: int | None = None
    sliding_window_layers: int | None = None  # how many layers use the window; None: all of them
    # A quantized checkpoint's format (config.json quantization_config, read by quant.py); group
    # size 0: one scale per output channel, -1: per tensor. quant_method None: not quantized.
    quant_method: str | None = None
    quant_dtype: str | None = None
    quant_group_size: int | None = None
    quant_zero_points: bool = False
    quant_skip: tuple[str, ...] = ()
    # Documentation, not arithmetic
    source: str = ""
    aliases: tuple[str, ...] = ()
    notes: str = ""

    def __post_init__(self) -> None:
        _validate_model(self)

    # -- derived shapes -------------------------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def embed_dim(self) -> int:
        """Width of the token embedding and of the head's input (hidden_size unless factorized)."""
        return self.embedding_proj_dim or self.hidden_size

    @property
    def embedding_projected(self) -> bool:
        """True when embedding_proj_dim adds project_in / project_out around the blocks."""
        return self.embed_dim != self.hidden_size

    @property
    def qk_norm_has_bias(self) -> bool:
        return self.norm_bias if self.qk_norm_bias is None else self.qk_norm_bias

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank is not None

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def qk_head_dim(self) -> int:
        """Width of one head's query/key vectors (MLA: nope + rope parts)."""
        if self.is_mla:
            return self.qk_nope_head_dim + self.qk_rope_head_dim
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def v_dim(self) -> int:
        """Width of one head's value vector."""
        if self.is_mla:
            return self.v_head_dim
        return self.qk_head_dim

    @property
    def expert_size(self) -> int:
        return self.moe_intermediate_size or self.intermediate_size

    @property
    def shared_expert_size(self) -> int:
        if self.shared_expert_intermediate_size is not None:
            return self.shared_expert_intermediate_size
        return self.num_shared_experts * self.expert_size

    @property
    def moe_layers(self) -> int:
        return self.num_hidden_layers - self.num_dense_layers if self.is_moe else 0

    @property
    def dense_layers(self) -> int:
        return self.num_hidden_layers - self.moe_layers

    @property
    def window_layers(self) -> int:
        if self.sliding_window is None:
            return 0
        return self.num_hidden_layers if self.sliding_window_layers is None else self.sliding_window_layers

    @property
    def past_context(self) -> str:
        """What running past max_position_embeddings means: a learned position table has no row there."""
        return "its learned position table has no row past it, so it cannot run that long as shipped" \
            if self.position_embedding == "learned" else "the model was not trained that long"


def _validate_model(m: ModelSpec) -> None:
    """Run the checks in a fixed order, so the first error for any input is always the same."""
    where = f"model {m.name!r}"
    for check in (_check_sizes, _check_choices, _check_norms, _check_counts, _check_heads, _check_moe,
                  _check_mla, _check_window, _check_quant):
        check(m, where)


def _check_sizes(m: ModelSpec, where: str) -> None:
    for f in dataclasses.fields(m):  # a hostile file's 10^400 stops here, before float() overflows or loops hang
        v, cap = getattr(m, f.name), MAX_NORMS if f.name == "norms_per_layer" else MAX_LAYERS if "layers" in f.name \
            else MAX_QUANTITY
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not abs(v) <= cap:
            raise SpecError(f"{where}: {f.name} = {str(v)[:20]} is not a plausible size (at most {cap:,})")
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                "intermediate_size", "max_position_embeddings"):
        _positive(where, key, getattr(m, key))
    for key in ("num_key_value_heads", "head_dim", "moe_intermediate_size", "q_lora_rank",
                "kv_lora_rank", "qk_nope_head_dim", "v_head_dim", "sliding_window", "embedding_proj_dim"):
        value = getattr(m, key)
        if value is not None:
            _positive(where, key, value)


def _check_choices(m: ModelSpec, where: str) -> None:
    check_choice(f"{where}: mlp_type", m.mlp_type, MLP_TYPES)
    check_choice(f"{where}: norm_type", m.norm_type, NORM_TYPES)
    check_choice(f"{where}: position_embedding", m.position_embedding, POSITION_EMBEDDINGS)
    check_choice(f"{where}: qk_norm", m.qk_norm, QK_NORMS)


def _check_norms(m: ModelSpec, where: str) -> None:
    if m.norm_type == "rmsnorm" and m.norm_bias:
        raise SpecError(f"{where}: RMSNorm has no bias; set norm_bias: false or norm_type: layernorm")
    if m.qk_norm_bias is not None:
        if m.qk_norm == "none":
            raise SpecError(f"{where}: qk_norm_bias is set but qk_norm is none; set qk_norm: head or full")
        if m.norm_type == "rmsnorm" and m.qk_norm_bias:
            raise SpecError(f"{where}: RMSNorm has no bias; set qk_norm_bias: false or norm_type: layernorm")


def _check_counts(m: ModelSpec, where: str) -> None:
    if not 0 <= m.dropout < 1:
        raise SpecError(f"{where}: dropout must be in [0, 1), got {m.dropout}")
    for key in ("norms_per_layer", "position_offset", "num_shared_experts", "num_dense_layers", "num_experts",
                "num_experts_per_tok", "shared_expert_intermediate_size", "qk_rope_head_dim"):
        value = getattr(m, key)
        if value is not None and value < 0:
            raise SpecError(f"{where}: {key} cannot be negative, got {value}")


def _check_heads(m: ModelSpec, where: str) -> None:
    if m.head_dim is None and not m.is_mla and m.hidden_size % m.num_attention_heads:
        raise SpecError(f"{where}: num_attention_heads ({m.num_attention_heads}) does not divide "
                        f"hidden_size ({m.hidden_size}); set head_dim explicitly if that is intended")
    if m.num_attention_heads % m.kv_heads:
        raise SpecError(f"{where}: num_key_value_heads ({m.kv_heads}) must divide "
                        f"num_attention_heads ({m.num_attention_heads})")


def _check_moe(m: ModelSpec, where: str) -> None:
    if m.is_moe:
        if not 0 < m.num_experts_per_tok <= m.num_experts:
            raise SpecError(f"{where}: num_experts_per_tok must be between 1 and num_experts "
                            f"({m.num_experts}), got {m.num_experts_per_tok}")
        if not 0 <= m.num_dense_layers <= m.num_hidden_layers:
            raise SpecError(f"{where}: num_dense_layers must be between 0 and num_hidden_layers")
    elif m.num_experts_per_tok or m.num_shared_experts or m.num_dense_layers:
        raise SpecError(f"{where}: MoE fields are set but num_experts is 0; set num_experts")


def _check_mla(m: ModelSpec, where: str) -> None:
    if m.is_mla:
        missing = [k for k in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim") if getattr(m, k) is None]
        if missing:
            raise SpecError(f"{where}: Multi-head Latent Attention (kv_lora_rank) also needs {', '.join(missing)}")
    elif m.q_lora_rank is not None:
        raise SpecError(f"{where}: q_lora_rank is only meaningful with kv_lora_rank (MLA)")


def _check_quant(m: ModelSpec, where: str) -> None:
    if m.quant_method is not None and (m.quant_dtype not in ("fp8", "int8", "int4", "fp4") or (m.quant_group_size or 0) < -1):
        raise SpecError(f"{where}: quant_dtype must be fp8, int8, int4 or fp4 and quant_group_size at least -1, "
                        f"got {m.quant_dtype!r} and {m.quant_group_size!r}")


def _check_window(m: ModelSpec, where: str) -> None:
    if m.sliding_window_layers is not None and not 0 <= m.sliding_window_layers <= m.num_hidden_layers:
        raise SpecError(f"{where}: sliding_window_layers must be between 0 and num_hidden_layers")
    if m.sliding_window_layers is not None and m.sliding_window is None:
        raise SpecError(f"{where}: sliding_window_layers is set but sliding_window is not")


def _positive(where: str, key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1e21:
        raise SpecError(f"{where}: {key} must be a positive number, got {value!r}")


def __getattr__(name: str) -> Any:
    if name == "GPUSpec":  # in gpuspec.py, loaded only where a GPU is: spec.GPUSpec still names it
        from .gpuspec import GPUSpec

        return GPUSpec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def model_fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(ModelSpec)}


@dataclass(frozen=True)
class Parallelism:
    """How a job is laid out over GPUs: gpus = dp x tp x pp x cp (EP and SP live inside them).

    tp tensor, pp pipeline, dp data, cp context (sequence split for attention), ep expert
    parallel, etp expert tensor parallel, sp sequence parallel (TP ranks also split the norm/dropout
    activations; Korthikanti et al. 2022). Experts follow Megatron-Core's MoE parallel folding (core
    0.10+): each routed expert is split over etp ranks (None: TP's, Megatron's default), and the ep x
    etp ranks that share a layer's experts come out of its tp x cp x dp ranks; etp 1 lets EP span TP.
    """

    gpus: int = 1
    tp: int = 1
    pp: int = 1
    dp: int = 1
    cp: int = 1
    ep: int = 1
    sp: bool = False
    etp: int | None = None
    tp_implied: bool = field(default=False, compare=False)  # infer: tp = the GPUs one instance spans, not --tp

    def __post_init__(self) -> None:
        for key in ("gpus", "tp", "pp", "dp", "cp", "ep", "etp"):
            value = getattr(self, key)
            if key == "etp" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"--{key} must be a whole number of at least 1, got {value!r}")
        product = self.dp * self.tp * self.pp * self.cp
        if product != self.gpus:
            raise SpecError(f"--gpus {self.gpus} must equal dp x tp x pp x cp = {self.dp} x {self.tp} x "
                            f"{self.pp} x {self.cp} = {product}")
        if self.tp % self.expert_tp:
            raise SpecError(f"--etp {self.expert_tp} must divide --tp {self.tp} (an expert's slices stay inside "
                            "its layer's TP group)")
        ranks = self.tp // self.expert_tp * self.dp * self.cp
        if ranks % self.ep:
            what = "dp x cp" if self.expert_tp == self.tp else "tp / etp x dp x cp"
            hint = "; --etp 1 lets EP span TP's too" if self.tp > 1 and self.expert_tp > 1 else ""
            raise SpecError(f"--ep {self.ep} must divide {what} = {ranks} (experts are split over data-parallel "
                            f"ranks{hint})")
        if self.sp and self.tp == 1:
            raise SpecError("--sp (sequence parallel) needs --tp > 1")

    @property
    def replicas(self) -> int:
        """Ranks that hold the same weights, over which ZeRO shards: dp x cp."""
        return self.dp * self.cp

    @property
    def expert_tp(self) -> int:
        """Ranks each routed expert is split over: etp, else TP's (Megatron-Core's default)."""
        return self.tp if self.etp is None else self.etp

    @property
    def expert_replicas(self) -> int:
        """Ranks that hold the same routed experts (Megatron's expert data parallel): tp x dp x cp / (ep x etp),
        dp x cp / ep where experts split as TP does."""
        return max(1, self.tp * self.replicas // (self.ep * self.expert_tp))

    @classmethod
    def resolve(cls, gpus: int | None = None, tp: int | None = None, pp: int | None = None,
                dp: int | None = None, cp: int | None = None, ep: int | None = None,
                sp: bool | None = None, mode: str = "train", etp: int | None = None) -> "Parallelism":
        """Fill unstated degrees the way people deploy.

        train: tp = pp = cp = 1 unless given; the GPUs left over go to data parallelism.
        infer: one model instance spans all GPUs with tensor parallelism (tp = gpus / pp / dp).
        """
        _check_given((("gpus", gpus), ("tp", tp), ("pp", pp), ("dp", dp), ("cp", cp), ("ep", ep), ("etp", etp)))
        pp, cp, ep, given_tp = pp or 1, cp or 1, ep or 1, tp
        gpus, tp = _gpus_and_tp(gpus, tp, pp, cp, dp or 1, mode)
        dp = _leftover_dp(gpus, tp, pp, cp) if dp is None else dp
        return cls(gpus=gpus, tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, sp=bool(sp) and tp > 1 if sp is None else sp,
                   etp=etp, tp_implied=mode == "infer" and given_tp is None)


def _check_given(degrees: tuple[tuple[str, int | None], ...]) -> None:
    for key, value in degrees:
        if value is not None and value < 1:
            raise SpecError(f"--{key} must be at least 1, got {value}")


def _gpus_and_tp(gpus: int | None, tp: int | None, pp: int, cp: int, dp: int, mode: str) -> tuple[int, int]:
    """The GPU count (the product of the degrees when unstated) and the TP degree (1, or all in infer)."""
    gpus = dp * (tp or 1) * pp * cp if gpus is None else gpus
    if mode == "infer" and tp is None:
        tp = _infer_tp(gpus, pp, cp, dp)
    return gpus, tp or 1


def _infer_tp(gpus: int, pp: int, cp: int, dp: int) -> int:
    """Inference: tensor parallelism takes every GPU that pp x cp x dp leave."""
    if gpus % (pp * cp * dp):
        raise SpecError(f"--gpus {gpus} is not divisible by pp x cp x dp = {pp * cp * dp}")
    return gpus // (pp * cp * dp)


def _leftover_dp(gpus: int, tp: int, pp: int, cp: int) -> int:
    """Data parallelism takes every GPU that tp x pp x cp leave."""
    if gpus % (tp * pp * cp):
        raise SpecError(f"--gpus {gpus} is not divisible by tp x pp x cp = {tp} x {pp} x {cp}; "
                        "choose degrees whose product divides the GPU count")
    return gpus // (tp * pp * cp)


def check_choice(flag: str, value: Any, choices: tuple) -> None:
    """A bad option value, named with its flag and every valid choice (exit code 2 in the CLI)."""
    if value not in choices:
        raise SpecError(f"{flag} must be one of {', '.join(map(str, choices))}, got {value!r}{nearest(value, choices)}")


def nearest(value: Any, choices) -> str:
    """"; did you mean X?" for the choice closest to a mistyped ``value`` (difflib's ratio over 0.6), else ""."""
    import difflib

    near = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f"; did you mean {near[0]}?" if near else ""


def default_seq(m: ModelSpec) -> int:
    """The sequence length a command takes when none is given: the model's context, at most 8k tokens."""
    return min(m.max_position_embeddings, 8192)
