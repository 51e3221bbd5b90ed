"""Memory per GPU for training and inference, derived from the architecture's tensors.

Training (``mode="train"``), per GPU, at the peak of a step: the start of the backward pass,
when every saved activation and the loss's buffers are alive at once.

- Model states (ZeRO paper, Rajbhandari et al. 2020, §3 and Fig. 1): weights, gradients, fp32
  master weights and each optimizer state, bytes per parameter from ``precision``:
  ``mixed`` 2 + 2 + (4 + 4 + 4) = 16 with Adam (ZeRO paper), ``mixed-fp32-grads`` 2 + 4 + (4 + 8)
  = 18 (Hugging Face docs: fp32 + half weights, fp32 grads), ``fp32`` 4 + 4 + 8, ``bf16`` 2 + 2 + 4.
  Split over TP x PP (experts also over EP), then sharded over the DP x CP ranks by ZeRO:
  stage 1 the optimizer, 2 also gradients, 3 also weights (FSDP full-shard is ZeRO-3).
- Activations saved for backward, from the tensors Hugging Face transformers' modules save
  (``layer_tensors`` lists them; measured with ``torch.autograd.graph.saved_tensors_hooks``),
  x micro-batch, divided by TP (heads, MLP width), SP (the hidden-width tensors) and CP (tokens),
  x the micro-batches in flight on the first pipeline stage under 1F1B (Korthikanti et al. 2022).
- Logits: cross-entropy (HF upcasts the logits to fp32) saves b·s·V log-probs; the backward
  pass then holds their gradient and the logits' gradient: 3 x b·s·V in the loss dtype.
  ``mini_seq`` M chunks the MLP and LM-head intermediates (Mini-Sequence Transformer, Luo et al. 2024).
- A fixed reserve: CUDA context, NCCL and cuBLAS workspaces, allocator slack.

Inference (``mode="infer"``): weights in ``dtype`` (int4/fp4 add a 16-bit scale per
``group_size`` weights), the KV cache of ``batch`` sequences of ``seq`` tokens, the working set of
one prefill chunk, the last position's logits, and the reserve; usable memory is capacity x
``gpu_util`` (vLLM's gpu_memory_utilization).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .breakdown import Breakdown, Rows
from .flops import RECOMPUTE
from .kvcache import FLOAT_DTYPES, block_rounded, default_kv_dtype, kv_values_per_token_layer
from .params import OPTIMIZERS, attention_linears, embedding_projections, layer_norms, mlp_linears, norm_params
from .spec import DTYPE_BYTES, DTYPES, GPUSpec, ModelSpec, Parallelism, SpecError

GiB = 2**30
MODES = ("train", "infer")
ATTENTION_IMPLS = ("eager", "sdpa", "flash")
FINETUNES = ("full", "lora", "qlora")
OFFLOADS = ("optimizer", "params")
HALF = ("bf16", "fp16")
FLOAT = FLOAT_DTYPES  # dtypes that hold activations and KV as they are (not weight-only quantized)

DEFAULT_RESERVE = 1 * GiB  # CUDA context (~0.5 GiB on Hopper, CUDA 12) + NCCL/cuBLAS workspaces + allocator slack
DEFAULT_GPU_UTIL = {"train": 1.0, "infer": 0.9}  # infer: vLLM's gpu_memory_utilization default
DEFAULT_ATTENTION_IMPL = {"train": "sdpa", "infer": "flash"}  # HF transformers' default; vLLM's kernel
DEFAULT_PREFILL_CHUNK = 8192  # tokens per prefill step (vLLM's max_num_batched_tokens, chunked prefill)
KV_BLOCK = 16  # inference KV cache in vLLM's 16-token blocks: each request rounded up to whole blocks
DEFAULT_LORA_RANK = 16
QLORA_BYTES = (4 + 8 / 64 + 32 / (64 * 256)) / 8  # QLoRA §3: NF4 + double-quantized absmax = 4.127 bits
LORA_NAMES = {"o": "proj", "o_proj": "proj", "c_proj": "proj", "q_proj": "q", "k_proj": "k", "v_proj": "v",
              "gate_proj": "gate", "up_proj": "up", "down_proj": "down", "fc1": "up", "fc2": "down"}


@dataclass(frozen=True)
class Precision:
    """Bytes per trainable parameter: working weights, gradients, fp32 master copy, each optimizer state."""

    weights: float
    grads: float
    master: float  # 0: the working weights are the fp32 copy the optimizer updates
    state: float  # bytes per optimizer state value (8-bit Adam overrides: 1)
    source: str


PRECISIONS: dict[str, Precision] = {
    "fp32": Precision(4, 4, 0, 4, "fp32 weights, grads and states: 4 + 4 + 8 = 16 B/param with Adam"),
    "mixed": Precision(2, 2, 4, 4, "ZeRO paper §3: 16-bit weights and grads, fp32 master, m, v: 2 + 2 + 12 = 16 B/param"),
    "mixed-fp32-grads": Precision(2, 4, 4, 4, "Hugging Face docs: fp32 + half weights (6), fp32 grads (4), m + v (8) = 18 B/param"),
    "bf16": Precision(2, 2, 0, 2, "pure 16-bit: weights, grads and states in bf16: 2 + 2 + 4 = 8 B/param with Adam"),
}

# Optimizer state rows (names under optimizer/); their count and width come from params.OPTIMIZERS.
STATE_NAMES: dict[str, tuple[str, ...]] = {
    "adamw": ("adam_m", "adam_v"), "adam": ("adam_m", "adam_v"), "adamw-8bit": ("adam_m", "adam_v"),
    "sgd": (), "sgd-momentum": ("momentum",), "lion": ("momentum",), "adafactor": ("adafactor_v",),
}

# Activation functions as HF transformers runs them: F-wide tensors saved inside the activation,
# and whether the one it saves is its output (ReLU), which the next matmul shares.
ACTIVATIONS: dict[str, tuple[int, bool]] = {
    "gelu": (1, False), "gelu_pytorch_tanh": (1, False), "silu": (1, False), "swish": (1, False),
    "relu": (0, True),
    # NewGELUActivation: 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))) in eight ops; saves x, tanh(·), 0.5·x, 1 + tanh(·)
    "gelu_new": (4, False),
}


@dataclass(frozen=True)
class MemorySettings:
    """Everything a memory estimate depends on besides the model and the GPU.

    mode: train | infer. seq: tokens per sequence (infer: prompt + output, the KV context).
    batch: sequences per micro-batch on one data-parallel replica (infer: concurrent requests).
    dtype: train: the 16-bit type of mixed/bf16 precision (fp32 for precision fp32), or the frozen
      base's dtype for LoRA; infer: the weights' dtype. Default from precision, else bf16.
    precision: fp32 | mixed (default, ZeRO's 16 B/param) | mixed-fp32-grads (HF's 18) | bf16.
    optimizer, zero (0-3), recompute (none | selective | full), attention_impl (eager | sdpa |
      flash; default sdpa for train as in HF transformers, flash for infer as in vLLM).
    kv_dtype: KV-cache dtype (default: dtype when it is a 16/32-bit float, else bf16; kvcache.py).
    kv_block: infer: KV allocated per request in blocks of this many tokens (16, vLLM; 1 = exact).
    loss_dtype: the cross-entropy's dtype (default fp32: HF and Megatron upcast the logits).
    mini_seq: Mini-Sequence chunks M of the MLP and LM head (1 = off).
    offload: subset of (optimizer, params): ZeRO-Offload / ZeRO-Infinity to CPU memory.
    finetune: full | lora | qlora; lora_rank (16), lora_targets (all: every linear of the blocks).
    group_size: weights per 16-bit scale for int4/fp4 inference weights (128).
    gpu_util: usable fraction of capacity (train 1.0, infer 0.9 as vLLM); reserve: fixed bytes
      (1 GiB); gpu_memory: capacity override in bytes; prefill_chunk: tokens per prefill step (8192).
    parallel: the layout (spec.Parallelism; resolve unstated degrees with Parallelism.resolve).
    """

    mode: str = "train"
    seq: int = 4096
    batch: int = 1
    dtype: str | None = None
    precision: str | None = None
    optimizer: str = "adamw"
    zero: int = 0
    recompute: str = "none"
    attention_impl: str | None = None
    kv_dtype: str | None = None
    loss_dtype: str = "fp32"
    mini_seq: int = 1
    offload: tuple[str, ...] = ()
    finetune: str = "full"
    lora_rank: int = DEFAULT_LORA_RANK
    lora_targets: tuple[str, ...] = ("all",)
    group_size: int = 128
    gpu_util: float | None = None
    reserve: int = DEFAULT_RESERVE
    gpu_memory: int | None = None
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK
    kv_block: int = KV_BLOCK
    parallel: Parallelism = field(default_factory=Parallelism)

    def __post_init__(self) -> None:
        _choice("--mode", self.mode, MODES)
        for key in ("seq", "batch", "mini_seq", "lora_rank", "group_size", "prefill_chunk", "kv_block"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"--{key.replace('_', '-')} must be a whole number of at least 1, got {value!r}")
        _choice("--optimizer", self.optimizer, tuple(OPTIMIZERS))
        _choice("--recompute", self.recompute, RECOMPUTE)
        _choice("--finetune", self.finetune, FINETUNES)
        _choice("--loss-dtype", self.loss_dtype, FLOAT)
        if self.zero not in (0, 1, 2, 3):
            raise SpecError(f"--zero must be 0, 1, 2 or 3, got {self.zero!r}")
        for item in self.offload:
            _choice("--offload", item, OFFLOADS)
        if self.reserve < 0:
            raise SpecError(f"--reserve cannot be negative, got {self.reserve}")
        if self.gpu_memory is not None and self.gpu_memory <= 0:
            raise SpecError(f"--gpu-memory must be positive, got {self.gpu_memory}")
        if self.mini_seq > self.seq:
            raise SpecError(f"--mini-seq {self.mini_seq} cannot exceed --seq {self.seq}")
        object.__setattr__(self, "offload", tuple(dict.fromkeys(self.offload)))
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        self._resolve_dtypes()
        impl = self.attention_impl or DEFAULT_ATTENTION_IMPL[self.mode]
        _choice("--attention-impl", impl, ATTENTION_IMPLS)
        object.__setattr__(self, "attention_impl", impl)
        util = DEFAULT_GPU_UTIL[self.mode] if self.gpu_util is None else self.gpu_util
        if not 0 < util <= 1:
            raise SpecError(f"--gpu-util must be in (0, 1], got {util}")
        object.__setattr__(self, "gpu_util", util)
        if self.mode == "train" and DTYPE_BYTES[self.loss_dtype] < DTYPE_BYTES[self.compute_dtype]:
            raise SpecError(f"--loss-dtype {self.loss_dtype} is narrower than the {self.compute_dtype} logits")
        if self.mode == "infer":
            wrong = [opt for opt, on in (("--zero", self.zero), ("--offload", self.offload),
                                         ("--recompute", self.recompute != "none"), ("--mini-seq", self.mini_seq > 1),
                                         ("--finetune", self.finetune != "full")) if on]
            if wrong:
                raise SpecError(f"{', '.join(wrong)} only apply to --mode train")
        if "params" in self.offload and self.zero != 3:
            raise SpecError("--offload params needs --zero 3 (ZeRO-Infinity offloads the sharded parameters)")
        if "optimizer" in self.offload and self.zero == 0:
            raise SpecError("--offload optimizer needs --zero 1, 2 or 3 (ZeRO-Offload runs the sharded optimizer on CPU)")

    def _resolve_dtypes(self) -> None:
        dtype, precision = self.dtype, self.precision
        if dtype is not None:
            _choice("--dtype", dtype, DTYPES)
        if self.mode == "train":
            if precision is None:
                precision = "fp32" if dtype in ("fp32", "tf32") else "mixed"
            _choice("--precision", precision, tuple(PRECISIONS))
            if dtype is None:
                dtype = "fp32" if precision == "fp32" else "bf16"
            if self.finetune == "full":
                if precision == "fp32" and dtype not in ("fp32", "tf32"):
                    raise SpecError(f"--precision fp32 trains fp32 weights; --dtype {dtype} contradicts it")
                if precision != "fp32" and dtype not in HALF:
                    raise SpecError(f"--precision {precision} needs a 16-bit --dtype (bf16 or fp16), got {dtype}; "
                                    "quantized weights train only as a frozen base: --finetune lora or qlora")
        elif precision is not None:
            raise SpecError("--precision only applies to --mode train (use --dtype for inference weights)")
        dtype = dtype or "bf16"
        kv = self.kv_dtype or default_kv_dtype(dtype)
        _choice("--kv-dtype", kv, DTYPES)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "precision", precision)
        object.__setattr__(self, "kv_dtype", kv)

    @property
    def compute_dtype(self) -> str:
        """The dtype activations are stored in: fp32 under precision fp32, else dtype when it is a
        float type, else bf16 (a quantized frozen base or weight-only inference computes in 16-bit)."""
        if self.mode == "train" and self.finetune == "full" and self.precision == "fp32":
            return "fp32"
        return self.dtype if self.dtype in FLOAT else "bf16"


def _choice(flag: str, value, choices: tuple) -> None:
    if value not in choices:
        raise SpecError(f"{flag} must be one of {', '.join(map(str, choices))}, got {value!r}")


# -- layout ----------------------------------------------------------------------------------------

def check_layout(m: ModelSpec, par: Parallelism) -> None:
    """Reject layouts the model cannot be split into (Megatron-LM and vLLM refuse them too)."""
    a, kv = m.num_attention_heads, m.kv_heads
    if a % par.tp:
        raise SpecError(f"--tp {par.tp} must divide the {a} attention heads of {m.name}")
    if not m.is_mla and kv % par.tp and par.tp % kv:
        raise SpecError(f"--tp {par.tp} and the {kv} kv heads of {m.name} must divide one another")
    if par.pp > m.num_hidden_layers:
        raise SpecError(f"--pp {par.pp} exceeds the {m.num_hidden_layers} layers of {m.name}")
    if par.ep > 1 and not m.is_moe:
        raise SpecError(f"--ep {par.ep} needs a Mixture-of-Experts model; {m.name} is dense")
    if m.is_moe and m.num_experts % par.ep:
        raise SpecError(f"--ep {par.ep} must divide the {m.num_experts} experts of {m.name}")


@dataclass(frozen=True)
class _Stage:
    index: int
    layers: int  # layers held by this stage
    dense: int  # of which dense (DeepSeek's first_k_dense_replace layers come first)
    first: bool  # holds the embedding and p micro-batches in flight (1F1B)
    last: bool  # holds the final norm, the LM head and the loss


def _stages(m: ModelSpec, pp: int) -> list[_Stage]:
    """The first and the last pipeline stage: between them they hold every per-GPU maximum.

    Layers split as evenly as they go, the first stages taking the remainder (L = 10, p = 4: 3, 3, 2, 2).
    """
    L = m.num_hidden_layers
    first = L // pp + (1 if L % pp else 0)
    spans = [(0, first)] if pp == 1 else [(0, first), (L - L // pp, L)]
    dense_end = m.dense_layers if m.is_moe else L
    return [_Stage(i * (pp - 1), hi - lo, max(0, min(hi, dense_end) - lo), i == 0, i == len(spans) - 1 or pp == 1)
            for i, (lo, hi) in enumerate(spans)]


# -- parameters per GPU -------------------------------------------------------------------------

@dataclass(frozen=True)
class _Params:
    """Parameters held by one GPU, split the ways the byte counts need."""

    linear: float = 0  # weight matrices inside the blocks (quantizable; LoRA's frozen base)
    other: float = 0  # norms, biases, routers, embeddings, LM head (kept 16-bit when quantizing)
    experts: float = 0  # routed-expert parameters (sharded by ZeRO over dp·cp/ep ranks)
    factored: float = 0  # Adafactor's state values: rows + cols per matrix, full size for vectors

    @property
    def total(self) -> float:
        return self.linear + self.other + self.experts

    def __add__(self, o: _Params) -> _Params:
        return _Params(self.linear + o.linear, self.other + o.other, self.experts + o.experts,
                       self.factored + o.factored)

    def scale(self, k: float) -> _Params:
        return _Params(self.linear * k, self.other * k, self.experts * k, self.factored * k)


def _tp_fraction(m: ModelSpec, name: str, tp: int) -> float:
    """Share of one linear held by a TP rank: heads and MLP width split; k/v replicate past kv heads."""
    if name in ("k", "v"):
        return math.ceil(m.kv_heads / tp) / m.kv_heads
    if name in ("q_a", "kv_a"):  # MLA's down-projections are replicated (Megatron-LM)
        return 1.0
    return 1 / tp


def _linears(m: ModelSpec, lins: dict, tp: int, split=None) -> _Params:
    w = bias = fac = 0.0
    for name, lin in lins.items():
        frac = split if split is not None else _tp_fraction(m, name, tp)
        w += lin.weight * frac
        fac += (lin.fan_in + lin.fan_out) * frac
        if lin.bias:  # row-parallel biases (proj, down) are replicated
            b = lin.fan_out * (1.0 if name in ("proj", "down") else frac)
            bias += b
            fac += b
    return _Params(linear=w, other=bias, factored=fac)


def _layer_params(m: ModelSpec, par: Parallelism, moe: bool) -> _Params:
    """One block's parameters on one GPU (TP splits heads and widths, EP splits experts)."""
    tp = par.tp
    norms = sum(layer_norms(m).values())
    p = _linears(m, attention_linears(m), tp) + _Params(other=norms, factored=norms)
    if not moe:
        return p + _linears(m, mlp_linears(m, m.intermediate_size), tp)
    h, e = m.hidden_size, m.num_experts
    router = h * e + (e if m.router_bias else 0)
    p += _Params(other=router, factored=h + e)
    expert = _linears(m, mlp_linears(m, m.expert_size), tp, split=1 / tp)
    local = e / par.ep  # routed experts on this EP rank
    p += _Params(experts=local * expert.total, factored=local * expert.factored)
    if m.shared_expert_size:
        p += _linears(m, mlp_linears(m, m.shared_expert_size), tp)
        if m.shared_expert_gate:
            p += _Params(other=h, factored=h)
    return p


def _stage_params(m: ModelSpec, par: Parallelism, st: _Stage) -> _Params:
    """Parameters on one GPU of a pipeline stage: its blocks, plus embedding (first) or head (last)."""
    h, V, tp = m.hidden_size, m.vocab_size, par.tp
    p = _layer_params(m, par, False).scale(st.dense) if st.dense else _Params()
    if st.layers > st.dense:
        p += _layer_params(m, par, True).scale(st.layers - st.dense)
    table = -(-V // tp) * m.embed_dim  # vocab-parallel embedding / head (Megatron-LM), p wide if factorized
    proj = {name: lin.params for name, lin in embedding_projections(m).items()}  # OPT's project_in/out
    if st.first:
        p += _Params(other=table + proj.get("project_in", 0), factored=V + m.embed_dim)
        if m.position_embedding == "learned":
            p += _Params(other=(m.max_position_embeddings + m.position_offset) * h, factored=h)
        if m.embedding_norm:
            p += _Params(other=norm_params(m, h), factored=h)
    if st.last:
        head = table if (not m.tie_word_embeddings or not st.first) else 0  # tied + PP: the last stage keeps a copy
        bias = -(-V // tp) if m.lm_head_bias else 0
        fnorm = norm_params(m, h) if m.final_norm else 0
        p += _Params(other=head + bias + fnorm + proj.get("project_out", 0),
                     factored=(V + m.embed_dim if head else 0) + bias + fnorm)
    return p


# -- model states -------------------------------------------------------------------------------

def state_rows(optimizer: str, precision: str) -> list[tuple[str, float]]:
    """(row name, bytes per value) of the fp32 master copy and each optimizer state.

    Adam keeps m and v, SGD with momentum and Lion one buffer, plain SGD none (params.OPTIMIZERS);
    8-bit Adam stores its states in 1 B (Dettmers et al. 2022); Adafactor's one row is its factored
    second moment, whose size is not per parameter (see model_state_bytes' state_values).
    """
    prec = PRECISIONS[precision]
    _, width = OPTIMIZERS[optimizer]
    per_state = prec.state if width is None else width
    rows = [("master", prec.master)] if prec.master else []
    return rows + [(name, per_state) for name in STATE_NAMES[optimizer]]


def model_state_bytes(psi: float, precision: str = "mixed", optimizer: str = "adamw", zero: int = 0,
                      nd: int = 1, state_values: float | None = None) -> dict[str, float]:
    """Per-GPU bytes of weights, gradients, master weights and each optimizer state (ZeRO paper).

    psi parameters replicated over nd data-parallel ranks; stage 1 shards the optimizer (master
    included), stage 2 also the gradients, stage 3 also the weights. With mixed precision and
    Adam (K = 12): stage 0 (2 + 2 + K)Ψ, 1 2Ψ + 2Ψ + KΨ/N_d, 2 2Ψ + (2 + K)Ψ/N_d, 3 (4 + K)Ψ/N_d
    (ZeRO paper Fig. 1: Ψ = 7.5B, N_d = 64 -> 120, 31.4, 16.6, 1.9 GB). state_values: values per
    optimizer state when not one per parameter (Adafactor's rows + cols).
    """
    prec = PRECISIONS[precision]

    def part(n: float, sharded: bool) -> float:
        return math.ceil(n / nd) if sharded else n  # ZeRO pads partitions to equal size

    out = {"weights": prec.weights * part(psi, zero >= 3), "gradients": prec.grads * part(psi, zero >= 2)}
    for name, b in state_rows(optimizer, precision):
        n = psi if name == "master" or state_values is None else state_values
        out[f"optimizer/{name}"] = b * part(n, zero >= 1)
    return out


# -- activations --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Saved:
    """One tensor saved for backward, in bytes per token of one sequence.

    group: the per-layer row it adds to (norms, attention, scores, mlp, dropout).
    split: "h" hidden-width (TP replicates it; SP splits it), "t" split by TP (heads, MLP width),
      "kv" kv heads (split by TP, replicated once TP exceeds them).
    needs: saved only when one of these weights trains (a matmul keeps its input only for its
      weight's gradient; measured: PyTorch skips it for frozen weights); () = always saved.
    per_key: bytes per token per attended key (the s x s scores of eager attention).
    inner: an F-wide MLP intermediate (what Mini-Sequence chunks).
    """

    group: str
    what: str
    nbytes: float
    split: str = "h"
    needs: tuple[str, ...] = ()
    per_key: bool = False
    inner: bool = False


def _norm(m: ModelSpec, width: int, e: float, group: str = "norms", what: str = "norm") -> list[Saved]:
    if m.norm_type == "layernorm":  # torch native_layer_norm: input + fp32 mean and rstd per row (CUDA)
        return [Saved(group, f"{what} input", e * width), Saved(group, f"{what} mean, rstd (fp32)", 8)]
    # HF LlamaRMSNorm: x.float() kept by pow/mul, fp32 rstd, and the normalized x for the weight's gradient
    items = [Saved(group, f"{what} fp32 input", 4 * width), Saved(group, f"{what} rstd (fp32)", 4)]
    if m.norm_affine:
        items.append(Saved(group, f"{what} normalized input", e * width, needs=("norm",)))
    return items


def _mlp(m: ModelSpec, width: int, e: float, copies: float = 1.0, tag: str = "") -> list[Saved]:
    """F-wide tensors of one MLP (per routed copy of a token for experts)."""
    inner, keeps_out = ACTIVATIONS.get(m.hidden_act, (1, False))
    gated = m.mlp_type == "gated"
    items = [Saved("mlp", f"{tag}activation's saved input{'s' if inner > 1 else ''}", copies * inner * e * width, "t", inner=True)]
    if gated:  # act(gate(x)) * up(x) keeps both factors; down keeps their product
        items += [Saved("mlp", f"{tag}act(gate) and up, kept by their product", copies * 2 * e * width, "t", inner=True),
                  Saved("mlp", f"{tag}product, down's input", copies * e * width, "t", ("down",), inner=True)]
    else:
        items.append(Saved("mlp", f"{tag}activation output, down's input", copies * e * width, "t",
                           () if keeps_out else ("down",), inner=True))
    return items


def layer_tensors(m: ModelSpec, impl: str = "sdpa", e: float = 2, moe: bool = False) -> list[Saved]:
    """The tensors one transformer block saves for backward, as HF transformers' modules save them.

    Measured on GPT-2 and Llama modules (transformers 5, torch 2.13) with saved_tensors_hooks:
    norms (LayerNorm: input + fp32 mean/rstd; HF RMSNorm: fp32 copy of the input + rstd + the
    normalized input); the projections' input; q, k, v (eager attention repeats k and v to every
    query head; sdpa/flash keep the kv heads); eager only: the s x s softmax output (fp32 when the
    model's code upcasts it: every family but GPT-2's), its 16-bit copy or dropout mask + output;
    sdpa/flash instead: the kernel output and a fp32 log-sum-exp per head; the output projection's
    input; MLP input and intermediates (plain: activation input + output; gated: gate output,
    act(gate), up, their product: one more than Korthikanti's 2 because HF does not fuse SwiGLU);
    dropout masks (1 B per element on CUDA) only when the model has dropout.
    Korthikanti et al. 2022 (GPT-3 style, 16-bit, dropout, eager): 34·h + 5·a·s bytes per token.
    """
    h, a = m.hidden_size, m.num_attention_heads
    d, dv = m.qk_head_dim, m.v_dim
    drop = m.dropout > 0
    attn_in = tuple(n for n in attention_linears(m) if n in ("q", "k", "v", "q_a", "kv_a"))
    mlp_in = ("gate", "up") if m.mlp_type == "gated" else ("up",)
    items = _norm(m, h, e, what="attention norm")
    items.append(Saved("attention", "q/k/v projections' input", e * h, needs=attn_in))
    if m.is_mla:  # DeepSeek-V2: the compressed latents pass a norm and an up-projection
        for rank, lin in ((m.q_lora_rank, "q_b"), (m.kv_lora_rank, "kv_b")):
            if rank:
                items += _norm(m, rank, e, "attention", f"{lin} latent norm")
                items.append(Saved("attention", f"{lin} input", e * rank, needs=(lin,)))
    kv_all = impl == "eager" or m.is_mla  # HF repeat_kv copies k/v to every head for eager; MLA decompresses
    items.append(Saved("attention", "q (after rope)", e * a * d, "t"))
    items.append(Saved("attention", "k and v" + (" (repeated to every head)" if impl == "eager" and not m.is_mla else ""),
                       e * (a if kv_all else m.kv_heads) * (d + dv), "t" if kv_all else "kv"))
    if impl == "eager":
        # HF Llama-family code runs softmax(..., dtype=float32) then casts back; GPT-2's keeps the dtype
        upcast = m.position_embedding != "learned" and e != 4
        items.append(Saved("scores", "softmax output" + (" (fp32)" if upcast else ""), (4 if upcast else e) * a, "t", per_key=True))
        if drop:
            items += [Saved("dropout", "attention-probability dropout mask", 1 * a, "t", per_key=True),
                      Saved("scores", "dropped-out probabilities", e * a, "t", per_key=True)]
        elif upcast:
            items.append(Saved("scores", "probabilities cast back to the compute dtype", e * a, "t", per_key=True))
        items.append(Saved("attention", "attention output, out-projection input", e * a * dv, "t", ("proj",)))
    else:
        items.append(Saved("attention", "log-sum-exp (fp32)", 4 * a, "t"))
        items.append(Saved("attention", "kernel output, out-projection input", e * a * dv, "t"))
    if drop:
        items.append(Saved("dropout", "attention residual dropout mask", 1 * h))
    shared_norm = m.parallel_attn and m.norms_per_layer == 1
    for i in range(m.norms_per_layer - 1):  # the MLP's norm, and Gemma-2's post-norms
        items += _norm(m, h, e, what="mlp norm" if i == 0 else "post norm")
    if not shared_norm:
        items.append(Saved("mlp", "MLP input", e * h, needs=mlp_in))
    if moe:  # HF Mixtral-style (grouped experts): fp32 router softmax; each of k experts gets a copy of the token
        k = m.num_experts_per_tok
        items.append(Saved("mlp", "router probabilities (fp32)", 4 * m.num_experts))
        items.append(Saved("mlp", "routing indices (int64) and weights (fp32)", 40 * k + 4))
        items.append(Saved("mlp", "expert inputs (k copies)", k * e * h, needs=mlp_in))
        items += _mlp(m, m.expert_size, e, k, "experts: ")
        items.append(Saved("mlp", "expert outputs, kept by the routing-weight product", k * e * h))
        if m.shared_expert_size:
            items += _mlp(m, m.shared_expert_size, e, 1, "shared expert: ")
    else:
        items += _mlp(m, m.intermediate_size, e)
    if drop:
        items.append(Saved("dropout", "MLP residual dropout mask", 1 * h))
    return items


GROUPS = ("norms", "attention", "scores", "mlp", "dropout")


@dataclass(frozen=True)
class _Local:
    """How the saved tensors of one micro-batch divide on one GPU."""

    tokens: float  # b · s / cp
    keys: int  # keys each query attends (eager scores)
    tp: int
    sp: bool
    kv_frac: float  # share of the kv heads on one TP rank

    def bytes(self, t: Saved) -> float:
        div = {"h": self.tp if self.sp else 1, "t": self.tp, "kv": 1 / self.kv_frac}[t.split]
        return t.nbytes * self.tokens * (self.keys if t.per_key else 1) / div


def _kept(t: Saved, trainable: frozenset | None) -> bool:
    return not t.needs or trainable is None or any(n in trainable for n in t.needs)


def _groups(items: list[Saved], loc: _Local, trainable, keep=lambda t: True) -> dict[str, float]:
    out = dict.fromkeys(GROUPS, 0.0)
    for t in items:
        if _kept(t, trainable) and keep(t):
            out[t.group] += loc.bytes(t)
    return out


# -- the breakdown ------------------------------------------------------------------------------

def _trainable(m: ModelSpec, s: MemorySettings) -> frozenset | None:
    """Weights that train: None = all (full fine-tuning); LoRA: the targeted linears' names."""
    if s.finetune == "full":
        return None
    names = set(attention_linears(m)) | set(mlp_linears(m, m.intermediate_size))
    chosen = set()
    for t in s.lora_targets:
        t = LORA_NAMES.get(t, t)
        if t in ("all", "all-linear"):
            chosen |= names
        elif t in names:
            chosen.add(t)
        else:
            raise SpecError(f"--lora-targets: {m.name} has no linear {t!r}; choose from all, {', '.join(sorted(names))}")
    return frozenset(chosen)


def _lora_params(m: ModelSpec, par: Parallelism, st: _Stage, targets: frozenset, r: int) -> float:
    """Adapter parameters on one GPU: r·(fan_in + fan_out) per targeted linear (Hu et al. 2021)."""
    def adapters(lins, copies=1.0):
        return copies * sum(r * (lin.fan_in + lin.fan_out) for n, lin in lins.items() if n in targets)
    attn = adapters(attention_linears(m))
    dense = attn + adapters(mlp_linears(m, m.intermediate_size))
    moe = attn + adapters(mlp_linears(m, m.expert_size), m.num_experts / par.ep)
    if m.is_moe and m.shared_expert_size:
        moe += adapters(mlp_linears(m, m.shared_expert_size))
    return (st.dense * dense + (st.layers - st.dense) * moe) / par.tp


@dataclass
class _Result:
    rows: Rows
    total: float
    cpu: dict
    summary: dict
    notes: list


def memory_breakdown(m: ModelSpec, gpu: GPUSpec | None, s: MemorySettings) -> Breakdown:
    """Bytes per GPU for ``s.mode``: every row in bytes, the total, and whether it fits ``gpu``.

    Pure and cheap (no I/O, a few hundred arithmetic operations): the limits search calls it
    dozens of times. Monotone in seq and batch. Under pipeline parallelism the first and the
    last stage are computed and the larger reported (summary ``stage``).
    """
    check_layout(m, s.parallel)
    stages = [_train(m, s, st) if s.mode == "train" else _infer(m, s, st) for st in _stages(m, s.parallel.pp)]
    res = max(stages, key=lambda x: x.total)
    capacity = s.gpu_memory or (gpu.memory_bytes if gpu else None)
    summary = {"total": round(res.total)}
    units = {"total": "byte"}
    if capacity is not None:
        usable = int(capacity * s.gpu_util)
        summary.update(capacity=int(capacity), usable=usable, fits=res.total <= usable,
                       headroom=usable - summary["total"])
        units.update(capacity="byte", usable="byte", headroom="byte")
    if res.cpu:
        summary["cpu"] = round(sum(res.cpu.values()))
        units["cpu"] = "byte"
    summary.update(res.summary)
    for key in res.summary:
        units[key] = {"stage": "count", "in_flight": "count", "params_per_gpu": "params",
                      "trainable_per_gpu": "params"}.get(key, "byte")
    par = s.parallel
    inputs = {"mode": s.mode, "seq": s.seq, "batch": s.batch, "dtype": s.dtype}
    if s.mode == "train":
        inputs.update(precision=s.precision, optimizer=s.optimizer, zero=s.zero, recompute=s.recompute)
    inputs.update(attention_impl=s.attention_impl)
    if s.mode == "train":
        inputs.update(loss_dtype=s.loss_dtype, mini_seq=s.mini_seq, offload=list(s.offload), finetune=s.finetune)
        if s.finetune != "full":
            inputs.update(lora_rank=s.lora_rank, lora_targets=list(s.lora_targets))
    else:
        inputs.update(kv_dtype=s.kv_dtype, group_size=s.group_size, prefill_chunk=s.prefill_chunk)
    inputs.update(gpus=par.gpus, tp=par.tp, pp=par.pp, dp=par.dp, cp=par.cp, ep=par.ep, sp=par.sp,
                  gpu_util=s.gpu_util, reserve=s.reserve, gpu_memory=s.gpu_memory)
    what = "training" if s.mode == "train" else "inference"
    return Breakdown(command="memory", title=f"Memory per GPU of {m.name}, {what}", model=m.name,
                     gpu=gpu.name if gpu else None, rows=res.rows.build(), summary=summary,
                     summary_units=units, inputs=inputs, notes=tuple(res.notes))


def _stage_note(st: _Stage, pp: int, in_flight: int) -> str:
    role = "first (embedding" + (f", {in_flight} micro-batches in flight, 1F1B)" if in_flight > 1 else ")") \
        if st.first and pp > 1 else "last (LM head and loss)"
    return f"pipeline stage {st.index} of {pp}: {role}, {st.layers} layers"


def _train(m: ModelSpec, s: MemorySettings, st: _Stage) -> _Result:
    par = s.parallel
    prec = PRECISIONS[s.precision]
    e = DTYPE_BYTES[s.compute_dtype]
    trainable = _trainable(m, s)
    nd = par.dp * par.cp  # ZeRO shards over every rank holding the same weights (dp x cp)
    nd_e = max(1, nd // par.ep)  # experts are replicated over dp·cp/ep ranks
    p = _stage_params(m, par, st)
    r = Rows("byte")
    notes = [prec.source]
    cpu: dict[str, float] = {}

    # model states: weights, gradients, master + optimizer states (ZeRO paper) ------------------
    if trainable is None:
        psi = p.total
        factored = p.factored if s.optimizer == "adafactor" else None  # Shazeer & Stern 2018: rows + cols
        dense = model_state_bytes(p.linear + p.other, s.precision, s.optimizer, s.zero, nd,
                                  factored and factored * (p.linear + p.other) / psi)
        experts = model_state_bytes(p.experts, s.precision, s.optimizer, s.zero, nd_e,
                                    factored and factored * p.experts / psi)
        states = {k: dense[k] + experts[k] for k in dense}
        main = states.pop("weights")
        subs = {}
        weight_note = f"{prec.weights:g} B/param x {_n(psi)} params" + (f" / {nd} (ZeRO-3)" if s.zero >= 3 else "")
    else:  # LoRA / QLoRA: a frozen base, trainable adapters (Hu et al. 2021; Dettmers et al. 2023)
        psi = _lora_params(m, par, st, trainable, s.lora_rank)
        states = model_state_bytes(psi, s.precision, s.optimizer, s.zero, nd)
        base_b = QLORA_BYTES if s.finetune == "qlora" else DTYPE_BYTES[s.dtype]
        frozen = (p.linear + p.experts) * base_b + p.other * e  # embeddings, norms, head stay in the compute dtype
        subs = {"weights/frozen": math.ceil(frozen / nd) if s.zero >= 3 else frozen,
                "weights/adapters": states.pop("weights")}
        main = sum(subs.values())
        weight_note = "frozen base + adapters"
        kind = "NF4 with double-quantized scales, 4.127 bits" if s.finetune == "qlora" else s.dtype
        notes.append(f"{s.finetune}: frozen base linears in {kind}, embeddings/norms/head in {s.compute_dtype}; "
                     f"rank-{s.lora_rank} adapters on {', '.join(sorted(trainable))}: {_n(psi)} trainable "
                     "params per GPU, with their gradients and optimizer states")
    gathered = 0.0
    if s.zero >= 3 and nd > 1:  # FSDP/ZeRO-3 all-gather the layer being computed and prefetch the next
        layer = max(_layer_params(m, par, moe).total for moe in ((False, True) if m.is_moe else (False,)))
        gathered = 2 * layer * (prec.weights if trainable is None else e)
    if "params" in s.offload:  # ZeRO-Infinity: the parameter shard lives in CPU memory
        cpu["weights"] = main
        subs = {"weights/gathered": gathered}
        main = 0.0
    elif gathered:
        subs = (subs or {"weights/shard": main}) | {"weights/gathered": gathered}
    for key, value in subs.items():
        r.add(key, _b(value), _weight_sub_note(key, s, nd))
    if "params" in s.offload:
        weight_note = "offloaded to CPU; gathered layers only"
    elif gathered:
        weight_note = "ZeRO-3 shard + gathered layers"
    r.add("weights", _b(main + gathered), weight_note)

    g = states.pop("gradients")
    experts_note = f", experts / {nd_e}" if p.experts and trainable is None and nd_e != nd else ""
    if "optimizer" in s.offload and s.zero >= 2:  # ZeRO-Offload: the reduced gradient partition goes to CPU
        cpu["gradients"], g = g, 0.0
        grad_note = "offloaded to CPU with the optimizer (ZeRO-Offload)"
    else:
        grad_note = f"{prec.grads:g} B/param" + (f" / {nd} (ZeRO-{s.zero}){experts_note}" if s.zero >= 2 else "")
    r.add("gradients", _b(g), grad_note)
    opt = {k: v for k, v in states.items() if k.startswith("optimizer/")}
    if "optimizer" in s.offload:
        cpu["optimizer"] = sum(opt.values())
        r.add("optimizer", 0, "offloaded to CPU (ZeRO-Offload)")
    else:
        for key, value in opt.items():
            r.add(key, _b(value), _state_note(key, s))
        r.add("optimizer", _b(sum(opt.values())),
              "master weights + states" + (f" / {nd} (ZeRO-{s.zero}){experts_note}" if s.zero >= 1 else ""))
    model_states = main + g + (0 if "optimizer" in s.offload else sum(opt.values()))

    # activations, logits ----------------------------------------------------------------------
    for name, value, note, per_layer in _train_activations(m, s, st, trainable, e):
        r.add(name, _b(value), note, total=None if per_layer else "total")
    notes.append(_activation_note(s))
    lb = DTYPE_BYTES[s.loss_dtype]
    logits = 0.0
    if st.last:
        chunk = -(-s.seq // s.mini_seq)  # Mini-Sequence: the LM head and loss run s/M tokens at a time
        elements = s.batch * math.ceil(chunk / par.cp) * -(-m.vocab_size // par.tp)  # vocab-parallel loss
        r.add("logits/log_probs", _b(elements * lb), f"log-softmax in {s.loss_dtype}, kept for backward")
        r.add("logits/grad", _b(2 * elements * lb), "its gradient and the logits' gradient")
        logits = 3 * elements * lb
        if s.mini_seq > 1:
            notes.append(f"mini-sequence {s.mini_seq}: LM head and loss over {chunk} tokens at a time, MLP "
                         "intermediates recomputed chunk by chunk (Mini-Sequence Transformer, Luo et al. 2024)")
    r.add("logits", _b(logits), f"3 x b·s{'/M' if s.mini_seq > 1 else ''}·V x {lb:g} B at the start of backward"
          if st.last else "not on this pipeline stage")
    r.add("kv_cache", 0, "training keeps no KV cache")
    r.add("reserve", _b(s.reserve), "CUDA context, NCCL/cuBLAS workspaces, allocator slack")
    total = sum(r[k] for k in ("weights", "gradients", "optimizer", "activations", "logits", "reserve"))
    r.add("total", total, "per GPU")
    for key, value in cpu.items():
        r.add(f"cpu/{key}", _b(value), "host memory, this GPU's share", total="cpu")
    if cpu:
        r.add("cpu", _b(sum(cpu.values())), "not in total", total="cpu")
    in_flight = par.pp if st.first and par.pp > 1 else 1
    summary = {"model_states": _b(model_states),
               "params_per_gpu": _b(p.total), "trainable_per_gpu": _b(psi), "stage": st.index, "in_flight": in_flight}
    if par.pp > 1:
        notes.append(_stage_note(st, par.pp, in_flight))
    notes.append(f"reserve {s.reserve / GiB:g} GiB; usable = capacity x {s.gpu_util:g}; the peak is taken at the "
                 "start of backward, transients added as if simultaneous (an upper bound)")
    return _Result(r, total, cpu, summary, notes)


def _weight_sub_note(key: str, s: MemorySettings, nd: int) -> str:
    return {"weights/frozen": "frozen base" + (f" / {nd} (ZeRO-3)" if s.zero >= 3 else ""),
            "weights/adapters": f"{PRECISIONS[s.precision].weights:g} B/param",
            "weights/shard": f"{PRECISIONS[s.precision].weights:g} B/param / {nd} (ZeRO-3)",
            "weights/gathered": "ZeRO-3: current + prefetched layer, all-gathered"}.get(key, "")


def _state_note(key: str, s: MemorySettings) -> str:
    name = key.split("/", 1)[1]
    b = dict(state_rows(s.optimizer, s.precision))[name]
    if name == "adafactor_v":
        return f"{b:g} B x (rows + cols) per matrix, factored second moment"
    what = {"master": "fp32 master weights", "adam_m": "first moment", "adam_v": "second moment",
            "momentum": "momentum"}[name]
    return f"{b:g} B/param, {what}"


def _activation_note(s: MemorySettings) -> str:
    what = {"none": "every saved tensor kept", "selective": "the s x s attention terms recomputed",
            "full": "each layer's input kept, one layer rebuilt at a time"}[s.recompute]
    return (f"activations as HF transformers modules save them ({s.attention_impl} attention, {s.compute_dtype}); "
            f"{what}; per_layer = one layer, one micro-batch of {s.batch} on this GPU")


def _local(m: ModelSpec, s: MemorySettings) -> _Local:
    par = s.parallel
    kv_eff = m.num_attention_heads if (s.attention_impl == "eager" or m.is_mla) else m.kv_heads
    return _Local(tokens=s.batch * math.ceil(s.seq / par.cp), keys=s.seq, tp=par.tp, sp=par.sp,
                  kv_frac=math.ceil(kv_eff / par.tp) / kv_eff)


def _train_activations(m: ModelSpec, s: MemorySettings, st: _Stage, trainable, e: float):
    """(name, bytes, note, is_per_layer) rows: one layer, all layers in flight, embedding, head, transient."""
    par, M, h = s.parallel, s.mini_seq, m.hidden_size
    loc = _local(m, s)
    # the layer input: what full recomputation checkpoints (Korthikanti's 2sbh in 16-bit)
    checkpoint = loc.bytes(Saved("norms", "layer input", e * h))
    kinds = ([(False, st.dense)] if st.dense else []) + ([(True, st.layers - st.dense)] if st.layers > st.dense else [])
    saved = transient = 0.0
    shown = None
    for moe, n in kinds:
        items = layer_tensors(m, s.attention_impl, e, moe)
        groups = _groups(items, loc, trainable)
        layer = sum(groups.values())
        inner = sum(loc.bytes(t) for t in items if t.inner and _kept(t, trainable))
        scores = sum(loc.bytes(t) for t in items if t.per_key)
        mst = inner if M > 1 else 0.0  # Mini-Sequence keeps the MLP input only and recomputes per chunk
        chunk = inner / M if M > 1 else 0.0
        if s.recompute == "none":
            per, extra = layer - mst, chunk
        elif s.recompute == "selective":  # Korthikanti et al.: recompute the attention core (s x s terms)
            per, extra = layer - scores - mst, scores + chunk
        else:  # full: keep each layer's input, rebuild one layer at a time during backward
            per, extra = checkpoint, layer - checkpoint - mst
        saved += n * per
        transient = max(transient, extra)
        if shown is None or n > shown[1]:
            shown = (groups, n, layer)
    groups, _, layer = shown
    in_flight = par.pp if st.first and par.pp > 1 else 1
    rows = [(f"activations/per_layer/{g}", v, _GROUP_NOTES[g], True) for g, v in groups.items() if v]
    rows.append(("activations/per_layer", layer, "one layer, one micro-batch, this GPU", True))
    rows.append(("activations/layers", saved * in_flight,
                 f"{st.layers} layers" + (f" x {in_flight} micro-batches in flight" if in_flight > 1 else "")
                 + {"none": "", "selective": ", s x s terms recomputed", "full": ", layer inputs only"}[s.recompute], False))
    emb = head = 0.0
    if st.first:  # token ids (8 B, for the embedding's gradient), embedding dropout mask, HF's rope cos/sin
        emb = loc.bytes(Saved("", "", 8)) if trainable is None else 0.0
        if m.dropout > 0:
            emb += loc.bytes(Saved("", "", 1 * h))
        if m.position_embedding == "rotary":
            emb += 2 * math.ceil(s.seq / par.cp) * m.qk_head_dim * e
        if m.position_embedding == "learned" and trainable is None:  # int64 position ids, shared by the batch
            emb += 8 * math.ceil(s.seq / par.cp)
        emb *= in_flight
        ids = "token and position ids" if m.position_embedding == "learned" else "token ids"
        what = ([ids] if trainable is None else []) + (["dropout mask"] if m.dropout > 0 else []) + \
            (["rope cos/sin"] if m.position_embedding == "rotary" else [])
        rows.append(("activations/embedding", emb, ", ".join(what), False))
    if st.last:  # final norm, LM head input, labels
        items = (_norm(m, h, e) if m.final_norm else []) + [Saved("", "", e * h, needs=("lm_head",)), Saved("", "", 8)]
        head = sum(loc.bytes(t) for t in items if _kept(t, None if trainable is None else frozenset()))
        rows.append(("activations/head", head, "final norm, LM head input, labels", False))
    if transient:
        rows.append(("activations/transient", transient,
                     {"none": "", "selective": "one layer's recomputed s x s terms",
                      "full": "the layer being rebuilt"}[s.recompute] + (" + " if s.recompute != "none" else "")
                     * (M > 1) + (f"one MLP chunk of s/{M} tokens" if M > 1 else ""), False))
    rows.append(("activations", saved * in_flight + emb + head + transient, "saved for backward", False))
    return rows


_GROUP_NOTES = {"norms": "norm inputs and statistics", "attention": "projection inputs, q, k, v, output",
                "scores": "s x s softmax output (eager only)", "mlp": "MLP input and intermediates",
                "dropout": "dropout masks, 1 B per element"}


def _infer(m: ModelSpec, s: MemorySettings, st: _Stage) -> _Result:
    par = s.parallel
    p = _stage_params(m, par, st)
    e = DTYPE_BYTES[s.compute_dtype]
    r = Rows("byte")
    notes = []
    wb = DTYPE_BYTES[s.dtype]
    quantized = p.linear + p.experts
    if s.dtype in FLOAT:
        r.add("weights", _b(p.total * wb), f"{wb:g} B/param x {_n(p.total)} params")
    else:  # weight-only / W8A8: linears quantized, embeddings, norms and head kept 16-bit
        scales = quantized / s.group_size * 2 if wb < 1 else 0  # GPTQ/AWQ: one fp16 scale per group
        r.add("weights/quantized", _b(quantized * wb), f"{wb * 8:g} bits x {_n(quantized)} linear weights")
        if scales:
            r.add("weights/scales", _b(scales), f"16-bit scale per {s.group_size} weights (zero points not counted)")
        r.add("weights/unquantized", _b(p.other * 2), "embeddings, norms, biases, head in 16-bit")
        r.add("weights", _b(quantized * wb + scales + p.other * 2),
              f"{(quantized * wb + scales) * 8 / quantized:.3g} bits per quantized weight")
    r.add("gradients", 0, "inference")
    r.add("optimizer", 0, "inference")
    # KV cache: K and V per kv head per layer (MLA: one latent), kv heads split by TP (kvcache.py)
    kvb = DTYPE_BYTES[s.kv_dtype]
    window = m.window_layers * st.layers // m.num_hidden_layers
    ctx = block_rounded(s.seq, s.kv_block)
    positions = window * min(ctx, m.sliding_window or ctx) + (st.layers - window) * ctx
    per_token_layer = kv_values_per_token_layer(m, par.tp) * kvb
    kv = s.batch * math.ceil(positions / par.cp) * per_token_layer
    # activations: one prefill chunk, one layer at a time: residual + normed input + the larger of
    # attention (q, k, v, output; eager adds the chunk x context scores) and the MLP's F-wide tensors
    c = math.ceil(min(s.prefill_chunk, s.batch * s.seq) / par.cp)
    a, kvh, d, dv, h = m.num_attention_heads, m.kv_heads, m.qk_head_dim, m.v_dim, m.hidden_size
    kv_local = a / par.tp if m.is_mla else math.ceil(kvh / par.tp)  # MLA decompresses k, v per head
    attn = c * e * (a / par.tp * (d + dv) + kv_local * (d + dv))
    if s.attention_impl == "eager":
        attn += c * s.seq * a / par.tp * (4 + e)
    width = m.intermediate_size if not m.is_moe else m.num_experts_per_tok * m.expert_size + m.shared_expert_size
    mlp = c * e * width / par.tp * (3 if m.mlp_type == "gated" else 2)
    act = c * 2 * e * h + max(attn, mlp)
    r.add("activations", _b(act), f"one prefill chunk of {c} tokens, one layer at a time")
    logits = s.batch * m.vocab_size * (e + 4) if st.last else 0  # last position's logits + fp32 copy (sampler)
    r.add("logits", _b(logits), "last position per request, 16-bit + fp32" if st.last else "not on this stage")
    heads_note = "MLA latent (replicated over TP)" if m.is_mla else \
        f"2 x {math.ceil(kvh / par.tp)} kv heads x {d}" + (" (replicated: TP > kv heads)" if par.tp > kvh else "")
    r.add("kv_cache", _b(kv), f"{s.batch} x {ctx} tokens x {st.layers} layers x {heads_note} x {kvb:g} B")
    r.add("reserve", _b(s.reserve), "CUDA context, NCCL/cuBLAS workspaces, allocator slack")
    total = r["weights"] + r["activations"] + r["logits"] + r["kv_cache"] + r["reserve"]
    r.add("total", _b(total), "per GPU")
    summary = {"kv_per_token": _b(per_token_layer * st.layers), "kv_per_request": _b(kv / s.batch),
               "params_per_gpu": _b(p.total), "stage": st.index}
    notes.append(f"KV cache in {s.kv_dtype}, {s.kv_block}-token blocks (vLLM); {s.attention_impl} attention; usable = capacity x {s.gpu_util:g} "
                 f"(vLLM gpu_memory_utilization); reserve {s.reserve / GiB:g} GiB")
    if par.pp > 1:
        notes.append(_stage_note(st, par.pp, 1))
    return _Result(r, total, {}, summary, notes)


# -- the Mini-Sequence closed form -----------------------------------------------------------------

@dataclass(frozen=True)
class MiniSeqPieces:
    """The per-token pieces of the Mini-Sequence Transformer's closed form (seed 001), bytes per GPU.

    w_mem: what does not grow with the sequence: weights + gradients + optimizer + reserve.
    i_mlp: per token, one layer's MLP intermediates (the F-wide tensors: what M chunks);
    i_head: per token, the LM head's loss buffers (3 x V in the loss dtype; / TP, / CP);
    i_mem = i_mlp + i_head, the seed's I_mem.
    a_mem: per token per layer, the other saved activations (at the given seq: eager's s x s scores
      make it grow with seq; flash/sdpa keep it constant), the seed's A_mem.
    layers: layers whose activations are held at once (layers on the stage x micro-batches in flight).

    memory_breakdown's total ≈ w_mem + S·(layers·(a_mem + i_mlp) + i_head) with M = 1, and
    w_mem + S·(layers·a_mem + i_mem/M) with M mini-sequences (the seed's formula; checkpointing
    replaces layers·a_mem by the checkpoints). Embedding, final-norm and transient terms are left out.
    """

    w_mem: float
    i_mlp: float
    i_head: float
    a_mem: float
    layers: int

    @property
    def i_mem(self) -> float:
        return self.i_mlp + self.i_head


def mini_seq_pieces(m: ModelSpec, s: MemorySettings) -> MiniSeqPieces:
    """W_mem, I_mem and A_mem for ``s`` (training), from the same tensors as memory_breakdown."""
    b = memory_breakdown(m, None, MemorySettings(**{**_fields(s), "mode": "train", "mini_seq": 1, "recompute": "none"}))
    par = s.parallel
    st = _stages(m, par.pp)[0]
    loc = _local(m, s)
    items = layer_tensors(m, s.attention_impl, DTYPE_BYTES[s.compute_dtype], m.is_moe and m.moe_layers >= m.dense_layers)
    trainable = _trainable(m, s)
    inner = sum(loc.bytes(t) for t in items if t.inner and _kept(t, trainable))
    layer = sum(_groups(items, loc, trainable).values())
    tokens = s.batch * s.seq
    w_mem = b.value("weights") + b.value("gradients") + b.value("optimizer") + b.value("reserve")
    i_head = 3 * DTYPE_BYTES[s.loss_dtype] * -(-m.vocab_size // par.tp) / par.cp
    in_flight = max(1, par.pp)
    return MiniSeqPieces(w_mem=w_mem, i_mlp=inner / tokens, i_head=i_head, a_mem=(layer - inner) / tokens,
                         layers=st.layers * in_flight)


def _fields(s: MemorySettings) -> dict:
    return {f: getattr(s, f) for f in s.__dataclass_fields__}


def _b(x: float) -> int:
    """Bytes as an integer (fractional bytes come from int4 and averages; round to the nearest)."""
    return round(x)


def _n(x: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if x >= scale:
            return f"{x / scale:.4g}{suffix}"
    return f"{x:.0f}"
