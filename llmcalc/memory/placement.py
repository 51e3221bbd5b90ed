"""What parameters one GPU holds: pipeline stages, TP splits, expert parallelism, LoRA adapters.

Megatron-LM's layout: TP splits heads and MLP widths (k/v replicate once TP exceeds the kv heads;
MLA's down-projections and row-parallel biases are replicated), vocab-parallel embedding and head,
EP splits the routed experts, PP gives each stage a contiguous run of layers.
"""

# No `from __future__ import annotations`: it makes this module's NamedTuples slower to build (see dtypes.Dtype).

import functools
import math
from typing import NamedTuple

from ..dtypes import DEFAULT_GROUP_SIZE, DTYPE_BYTES, FLOAT_DTYPES, GGUF_DTYPES, SCALE_BYTES, UNQUANTIZED_BYTES
from ..params import attention_linears, embedding_projections, layer_norms, mlp_linears, norm_params
from ..spec import ModelSpec, Parallelism, SpecError

# PEFT target names as people write them -> llmcalc's linear names
LORA_NAMES = {"o": "proj", "o_proj": "proj", "c_proj": "proj", "q_proj": "q", "k_proj": "k", "v_proj": "v",
              "gate_proj": "gate", "up_proj": "up", "down_proj": "down", "fc1": "up", "fc2": "down"}


def check_layout(m: ModelSpec, par: Parallelism) -> None:
    """Reject layouts the model cannot be split into (Megatron-LM and vLLM refuse them too)."""
    a, kv = m.num_attention_heads, m.kv_heads
    # an inference layout's TP is the GPUs one instance spans unless --tp was given: name what the user typed
    rest = par.pp * par.cp * par.dp
    spread = "as one instance" if rest == 1 else f"over pp x cp x dp = {rest}"
    tp = f"TP {par.tp} (--gpus {par.gpus} {spread}; --tp sets it)" if par.tp_implied else f"--tp {par.tp}"
    if a % par.tp:
        raise SpecError(f"{tp} must divide the {a} attention heads of {m.name}")
    if not m.is_mla and kv % par.tp and par.tp % kv:
        raise SpecError(f"{tp} and the {kv} kv heads of {m.name} must divide one another")
    if par.pp > m.num_hidden_layers:
        raise SpecError(f"--pp {par.pp} exceeds the {m.num_hidden_layers} layers of {m.name}")
    if par.ep > 1 and not m.is_moe:
        raise SpecError(f"--ep {par.ep} needs a Mixture-of-Experts model; {m.name} is dense")
    check_etp(m, par.etp)
    if m.is_moe and m.num_experts % par.ep:
        raise SpecError(f"--ep {par.ep} must divide the {m.num_experts} experts of {m.name}")


def check_etp(m: ModelSpec, etp: int | None) -> None:
    """An expert split needs experts to split."""
    if etp is not None and not m.is_moe:
        raise SpecError(f"--etp splits routed experts; {m.name} is dense (drop --etp {etp})")


class Stage(NamedTuple):  # a NamedTuple: placement loads with `params` (see dtypes.Dtype)
    index: int
    layers: int  # layers held by this stage
    dense: int  # of which dense (DeepSeek's first_k_dense_replace layers come first)
    first: bool  # holds the embedding and p micro-batches in flight (1F1B)
    last: bool  # holds the final norm, the LM head and the loss

    @property
    def moe(self) -> int:
        return self.layers - self.dense


def stage_sizes(layers: int, pp: int) -> tuple[int, int, int]:
    """Layers of the first, the fullest middle and the last of ``pp`` stages (pp > 1): the remainder of an
    uneven split goes to the middle stages first, then to the last (stages())."""
    base, extra = divmod(layers, pp)
    return base, base + (1 if extra else 0) if pp > 2 else base, base + (1 if extra > pp - 2 else 0)


@functools.lru_cache(maxsize=256)  # pure, and asked again at every point of a sweep
def stage_layers(layers: int, pp: int) -> tuple[int, int]:
    """(layers of the fullest rank, layers of the last rank, which also runs the LM head), as stages() places them
    for memory: an uneven split puts its extra layers on the middle ranks, then the last. Interleaved, a rank's
    layers are its v chunks', which an uneven split sizes unequally (Megatron's --pipeline-model-parallel-layout;
    Llama 3 405B's 126 layers ran as 16 x 8 one-layer chunks, the first and last ranks one short)."""
    if pp == 1:
        return layers, layers
    _, middle, last = stage_sizes(layers, pp)
    return max(middle, last), last


def pipeline_in_flight(pp: int, vpp: int, stage: int, micro_batches: int, extra: int = 0) -> float:
    """Micro-batches whose activations pipeline stage ``stage`` holds at its peak, at most the step's. 1F1B:
    p - i (Narayanan et al. 2021). Interleaved over v virtual stages: Megatron-Core's warm-up of 2(p - i - 1) +
    (v - 1)p chunk forwards (and ``extra`` more: --ep-overlap's one) plus the one running, each chunk 1/v of the
    rank's layers, so p + (p - 1)/v on the first stage (Korthikanti et al. 2022 §4.2.3)."""
    held = pp - stage if vpp == 1 else ((pp - stage - 1) * 2 + (vpp - 1) * pp + extra + 1) / vpp
    return min(micro_batches, held)


def uneven_split(layers: int, pp: int, vpp: int, done: str = "sized") -> list[str]:
    """Layers that do not split evenly over the (virtual) stages: what Megatron-Core needs to run them (arguments.py:
    num_layers divisible by pp, and by pp x vpp interleaved, unless the first and last stages are set apart or a
    custom layout is given); ``done``: what the estimate did with the fullest rank."""
    if pp == 1 or layers % (pp * vpp) == 0:
        return []
    return [f"{layers} layers do not split evenly over {pp} stages" + (f" x {vpp} virtual" if vpp > 1 else "")
            + f" ({done} with {stage_layers(layers, pp)[0]} on the fullest rank): Megatron-Core runs an uneven split "
            "with --decoder-first-pipeline-num-layers and --decoder-last-pipeline-num-layers, or "
            "--pipeline-model-parallel-layout"]


def check_interleaving(m: ModelSpec, pp: int, vpp: int) -> None:
    """Each virtual stage holds a layer at least (Megatron-Core's num_layers_per_virtual_pipeline_stage)."""
    if vpp > 1 and pp * vpp > m.num_hidden_layers:
        raise SpecError(f"--vpp {vpp} gives {pp * vpp} virtual stages over --pp {pp}, more than {m.name}'s "
                        f"{m.num_hidden_layers} layers (each holds one at least)")


def stages(m: ModelSpec, pp: int) -> tuple[Stage, ...]:
    """The first pipeline stage, the second where an uneven split gives it a layer more, and the last:
    between them they hold every per-GPU maximum (1F1B keeps p - i micro-batches on stage i).

    Layers split as evenly as they go. A remainder goes to the middle stages first, then to the last: the
    first stage holds p micro-batches of activations and the last the head and the loss, so an uneven
    split lightens them (Llama 3's 126 layers on 16 stages: 7, 8 x 14, 7; Megatron-Core's
    decoder_first/last_pipeline_num_layers). L = 10, p = 4: 2, 3, 3, 2; L = 5, p = 2: 2, 3.
    """
    L = m.num_hidden_layers
    if pp == 1:
        spans = [(0, 0, L)]
    else:
        first, middle, last = stage_sizes(L, pp)
        spans = [(0, 0, first)] + ([(1, first, first + middle)] if middle > first else []) + [(pp - 1, L - last, L)]
    dense_end = m.dense_layers if m.is_moe else L
    return tuple(Stage(i, hi - lo, max(0, min(hi, dense_end) - lo), i == 0, i == pp - 1) for i, lo, hi in spans)


def whole_model(m: ModelSpec) -> Stage:
    """One stage holding every layer, the embedding and the head: the model on a single GPU."""
    return stages(m, 1)[0]


class ParamSplit(NamedTuple):
    """Parameters held by one GPU, split the ways the byte counts need.

    A NamedTuple (loads with `params`; see dtypes.Dtype) whose ``+`` adds field by field.
    """

    linear: float = 0  # weight matrices inside the blocks (quantizable; LoRA's frozen base)
    other: float = 0  # norms, biases, routers, embeddings, LM head (kept 16-bit when quantizing)
    experts: float = 0  # routed-expert parameters (sharded by ZeRO over dp·cp/ep ranks)
    factored: float = 0  # Adafactor's state values: rows + cols per matrix, full size for vectors

    @property
    def total(self) -> float:
        return self.linear + self.other + self.experts

    @property
    def quantizable(self) -> float:
        """The block linears and experts: what weight quantization and LoRA's frozen base cover."""
        return self.linear + self.experts

    def weight_bytes(self, dtype: str, group_size: int = DEFAULT_GROUP_SIZE, fmt=None, kept: float = 0.0,
                     fan_in: int | None = None) -> dict[str, float]:
        """What these weights weigh in ``dtype``: the one rule params, memory and latency all use.

        Float dtypes hold every parameter as is ({"weights": bytes}), GGUF types at their whole-file
        average. Quantized ones store the block linears and experts in the format, sub-byte formats
        add one 16-bit scale per ``group_size`` weights, and the rest stays 16-bit ({"quantized",
        "scales", "unquantized"}; their sum is the weights; dtypes.py). ``fmt`` (quant.WeightFormat):
        a checkpoint's own layout (scales, zero points, per channel or block; per-channel scales
        spread over ``fan_in``); ``kept``: the share of the linears kept in 16 bits.
        """
        nbytes = DTYPE_BYTES[dtype]
        if fmt is None and (dtype in FLOAT_DTYPES or dtype in GGUF_DTYPES):  # GGUF: averages over the whole file
            return {"weights": self.total * nbytes}
        per = fmt.bytes_per_weight(fan_in) if fmt is not None else \
            nbytes + (SCALE_BYTES / group_size if nbytes < 1 else 0)
        quantized = self.quantizable * (1 - kept)
        return {"quantized": quantized * nbytes, "scales": quantized * (per - nbytes),
                "unquantized": (self.other + self.quantizable * kept) * UNQUANTIZED_BYTES}

    def __add__(self, o: "ParamSplit") -> "ParamSplit":
        return ParamSplit(self.linear + o.linear, self.other + o.other, self.experts + o.experts,
                          self.factored + o.factored)

    def scale(self, k: float) -> "ParamSplit":
        return ParamSplit(self.linear * k, self.other * k, self.experts * k, self.factored * k)


def _tp_fraction(m: ModelSpec, name: str, tp: int) -> float:
    """Share of one linear held by a TP rank: heads and MLP width split; k/v replicate past kv heads."""
    if name in ("k", "v"):
        return math.ceil(m.kv_heads / tp) / m.kv_heads
    if name in ("q_a", "kv_a"):  # MLA's down-projections are replicated (Megatron-LM)
        return 1.0
    return 1 / tp


def _linears(m: ModelSpec, lins: dict, tp: int, split: float | None = None) -> ParamSplit:
    w = bias = fac = 0.0
    for name, lin in lins.items():
        frac = split if split is not None else _tp_fraction(m, name, tp)
        w += lin.weight * frac
        fac += (lin.fan_in + lin.fan_out) * frac
        if lin.bias:  # row-parallel biases (proj, down) are replicated
            b = lin.fan_out * (1.0 if name in ("proj", "down") else frac)
            bias += b
            fac += b
    return ParamSplit(linear=w, other=bias, factored=fac)


@functools.lru_cache(maxsize=256)  # pure, and asked again at every point of a sweep
def layer_params(m: ModelSpec, par: Parallelism, moe: bool) -> ParamSplit:
    """One block's parameters on one GPU (TP splits heads and widths, EP splits experts, ETP each expert)."""
    tp = par.tp
    norms = sum(layer_norms(m).values())
    p = _linears(m, attention_linears(m), tp) + ParamSplit(other=norms, factored=norms)
    if not moe:
        return p + _linears(m, mlp_linears(m, m.intermediate_size), tp)
    h, e = m.hidden_size, m.num_experts
    router = h * e + (e if m.router_bias else 0)
    p += ParamSplit(other=router, factored=h + e)
    etp = par.expert_tp
    expert = _linears(m, mlp_linears(m, m.expert_size), etp, split=1 / etp)
    local = e / par.ep  # routed experts on this EP rank
    p += ParamSplit(experts=local * expert.total, factored=local * expert.factored)
    if m.shared_expert_size:
        p += _linears(m, mlp_linears(m, m.shared_expert_size), tp)
        if m.shared_expert_gate:
            p += ParamSplit(other=h, factored=h)
    return p


def _embedding_params(m: ModelSpec, tp: int) -> ParamSplit:
    """The first stage's extras: vocab-parallel token table (p wide if factorized), project_in,
    a learned position table, an embedding norm."""
    h, V = m.hidden_size, m.vocab_size
    proj_in = embedding_projections(m).get("project_in")
    p = ParamSplit(other=-(-V // tp) * m.embed_dim, factored=V + m.embed_dim)
    if proj_in:
        p += ParamSplit(other=proj_in.params, factored=proj_in.fan_in + proj_in.fan_out)
    if m.position_embedding == "learned":
        positions = m.max_position_embeddings + m.position_offset
        p += ParamSplit(other=positions * h, factored=positions + h)
    if m.embedding_norm:
        p += ParamSplit(other=norm_params(m, h), factored=norm_params(m, h))
    return p


def _head_params(m: ModelSpec, tp: int, holds_embedding: bool) -> ParamSplit:
    """The last stage's extras: final norm, LM head (tied + PP: the last stage keeps a copy), project_out."""
    h, V = m.hidden_size, m.vocab_size
    head = -(-V // tp) * m.embed_dim if (not m.tie_word_embeddings or not holds_embedding) else 0
    bias = -(-V // tp) if m.lm_head_bias else 0
    fnorm = norm_params(m, h) if m.final_norm else 0
    proj_out = embedding_projections(m).get("project_out")
    return ParamSplit(other=head + bias + fnorm + (proj_out.params if proj_out else 0),
                      factored=(V + m.embed_dim if head else 0) + bias + fnorm
                      + (proj_out.fan_in + proj_out.fan_out if proj_out else 0))


@functools.lru_cache(maxsize=256)  # pure, and asked again at every point of a sweep
def stage_params(m: ModelSpec, par: Parallelism, st: Stage) -> ParamSplit:
    """Parameters on one GPU of a pipeline stage: its blocks, plus embedding (first) or head (last)."""
    p = layer_params(m, par, False).scale(st.dense) if st.dense else ParamSplit()
    if st.moe:
        p += layer_params(m, par, True).scale(st.moe)
    if st.first:
        p += _embedding_params(m, par.tp)
    if st.last:
        p += _head_params(m, par.tp, st.first)
    return p


@functools.lru_cache(maxsize=256)  # pure, and asked again at every point of a sweep
def model_params(m: ModelSpec) -> ParamSplit:
    """The whole model's parameters, split into quantizable linears, experts and the rest."""
    return stage_params(m, Parallelism(), whole_model(m))


@functools.lru_cache(maxsize=256)  # pure, and asked again at every point of a sweep
def trainable(m: ModelSpec, finetune: str, targets: tuple[str, ...]) -> frozenset | None:
    """Weights that train: None = all (full fine-tuning); LoRA: the targeted linears' names."""
    if finetune == "full":
        return None
    names = set(attention_linears(m)) | set(mlp_linears(m, m.intermediate_size))
    chosen = set()
    for t in targets:
        t = LORA_NAMES.get(t, t)
        if t in ("all", "all-linear"):
            chosen |= names
        elif t in names:
            chosen.add(t)
        else:
            raise SpecError(f"LoRA targets {','.join(targets)} (--lora-targets, else the framework's default): "
                            f"{m.name} has no linear {t!r}; give --lora-targets from all, {', '.join(sorted(names))}")
    if not chosen:
        raise SpecError(f"--lora-targets names no linear, so nothing would train; choose from all, {', '.join(sorted(names))}")
    return frozenset(chosen)


def lora_params(m: ModelSpec, par: Parallelism, st: Stage, targets: frozenset, r: int) -> tuple[float, float]:
    """Adapter parameters on one GPU, (on dense weights, on routed experts): r·(fan_in + fan_out) per targeted
    linear (Hu et al. 2021), split as the linear is: over TP, the routed experts' over expert TP (etp)."""
    def adapters(lins, copies=1.0):
        return copies * sum(r * (lin.fan_in + lin.fan_out) for n, lin in lins.items() if n in targets)
    attn = adapters(attention_linears(m))
    dense = attn + adapters(mlp_linears(m, m.intermediate_size))
    moe = attn
    if m.is_moe and m.shared_expert_size:
        moe += adapters(mlp_linears(m, m.shared_expert_size))
    experts = adapters(mlp_linears(m, m.expert_size), m.num_experts / par.ep) if m.is_moe else 0.0
    return (st.dense * dense + st.moe * moe) / par.tp, st.moe * experts / par.expert_tp
