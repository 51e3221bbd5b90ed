"""The tensors one transformer block keeps: saved for backward (training) and alive at the
forward peak (the inference working set), from one list per block.

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

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

from ..params import attention_linears, mlp_linears
from ..spec import ModelSpec

# Activation functions as HF transformers runs them: F-wide tensors saved inside the activation,
# and whether the one it saves is its output (ReLU), which the next matmul shares.
ACTIVATIONS: dict[str, tuple[int, bool]] = {
    "gelu": (1, False), "gelu_pytorch_tanh": (1, False), "silu": (1, False), "swish": (1, False),
    "relu": (0, True),
    # NewGELUActivation: 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))) in eight ops; saves x, tanh(·), 0.5·x, 1 + tanh(·)
    "gelu_new": (4, False),
}
GROUPS = ("norms", "attention", "scores", "mlp", "dropout", "adapters")  # the activations/per_layer/ rows
SUBLAYER = {"norms": "attention", "attention": "attention", "scores": "attention", "mlp": "mlp", "dropout": "mlp",
            "adapters": "attention"}


@dataclass(frozen=True)
class Saved:
    """One tensor of a block, in bytes per token of one sequence.

    group: the per-layer row it adds to (norms, attention, scores, mlp, dropout).
    nbytes: saved for backward; live: alive at the forward peak of its sub-layer without autograd
      (inference: the attention core's q, k, v, output and scores; the MLP's F-wide tensors).
    split: "h" hidden-width (TP replicates it; SP splits it), "t" split by TP (heads, MLP width),
      "kv" kv heads (split by TP, replicated once TP exceeds them), "x" a routed expert's hidden-width
      input (SP splits it over TP, and Megatron's all-to-all dispatcher gathers it back over the expert's
      etp ranks: token_dispatcher.py, core 0.15).
    needs: saved only when one of these weights trains (a matmul keeps its input only for its
      weight's gradient; measured: PyTorch skips it for frozen weights); () = always saved.
    per_key: bytes per token per attended key (the s x s scores of eager attention).
    inner: an F-wide MLP intermediate (what Mini-Sequence chunks).
    module: the Megatron-Core recompute module (recompute.RECOMPUTE_MODULES) whose checkpoint frees it after
      forward and rebuilds it before its consumer's backward.
    """

    group: str
    what: str
    nbytes: float
    split: str = "h"
    needs: tuple[str, ...] = ()
    per_key: bool = False
    inner: bool = False
    live: float = 0.0
    module: str = ""


def norm_tensors(m: ModelSpec, width: int, e: float, group: str = "norms", what: str = "norm",
                 compiled: bool = False, keeps_output: bool = False, fused: bool = False) -> list[Saved]:
    """What one norm saves, per token. Compiled (inductor): an RMSNorm keeps its fp32 rstd and rebuilds
    the rest in backward, the attention norm from the layer's own input, which it keeps (seen in the CPU
    dump of tests/fidelity); keeps_output: the MLP norm's output, which its matmuls need, stays."""
    if m.norm_type == "layernorm":  # torch native_layer_norm: input + fp32 mean and rstd per row (CUDA)
        return [Saved(group, f"{what} input", e * width), Saved(group, f"{what} mean, rstd (fp32)", 8)]
    if fused:  # Transformer Engine / Apex fused RMSNorm: the input in its own dtype and the fp32 rstd
        return [Saved(group, f"{what} input", e * width), Saved(group, f"{what} rstd (fp32)", 4)]
    if compiled:
        kept = [Saved(group, f"{what} output, the matmuls' input", e * width)] if keeps_output else \
            [Saved(group, f"{what} input, the layer's input", e * width)]
        return [Saved(group, f"{what} rstd (fp32)", 4)] + kept
    # HF LlamaRMSNorm: x.float() kept by pow/mul, fp32 rstd, and the normalized x for the weight's gradient
    items = [Saved(group, f"{what} fp32 input", 4 * width), Saved(group, f"{what} rstd (fp32)", 4)]
    if m.norm_affine:
        items.append(Saved(group, f"{what} normalized input", e * width, needs=("norm",)))
    return items


def _mlp(m: ModelSpec, width: int, e: float, copies: float = 1.0, tag: str = "", compiled: bool = False,
         native_act: bool = False, fused: bool = False, g: float | None = None, act_module: str = "") -> list[Saved]:
    """F-wide tensors of one MLP (per routed copy of a token for experts).

    Forward peak: plain up(x) and act(up(x)) (2F); gated act(gate(x)), up(x) and their product (3F).
    Compiled (inductor): the activation is one fused kernel; gated MLPs keep gate(x) and up(x) and
    rebuild act(gate) in backward. native_act: the model code calls torch's own kernel (F.gelu with
    approximate="tanh" in LitGPT) where HF runs a Python formula (gelu_new): one saved input. fused:
    Megatron-Core's bias_swiglu_impl keeps fc1's output alone and recomputes the product in backward;
    g: bytes per element of the input down keeps (FP8 under Transformer Engine, memory/fp8.py); act_module: the
    recompute module that drops the fused activation's output (moe_act for the routed experts).
    """
    inner, keeps_out = ACTIVATIONS.get(m.hidden_act, (1, False))
    inner = min(inner, 1) if compiled or native_act else inner
    f = copies * e * width
    if m.mlp_type == "gated" and fused:  # Megatron's fused SwiGLU: fc1's [gate | up] output, and fc2's input
        return [Saved("mlp", f"{tag}fc1 output (gate and up), the fused activation's input", 2 * f, "t", inner=True,
                      live=2 * f),
                Saved("mlp", f"{tag}activation output, down's input" + (" (FP8)" if g else ""),
                      copies * (g or e) * width, "t", ("down",), inner=True, live=f,
                      module=act_module)]
    if m.mlp_type == "gated" and compiled:
        return [Saved("mlp", f"{tag}gate and up outputs", 2 * f, "t", inner=True, live=2 * f),
                Saved("mlp", f"{tag}product, down's input", f, "t", ("down",), inner=True, live=f)]
    if m.mlp_type == "gated":  # act(gate(x)) * up(x) keeps both factors; down keeps their product
        return [Saved("mlp", f"{tag}activation's saved input{'s' if inner > 1 else ''}", inner * f, "t", inner=True),
                Saved("mlp", f"{tag}act(gate) and up, kept by their product", 2 * f, "t", inner=True, live=2 * f),
                Saved("mlp", f"{tag}product, down's input", f, "t", ("down",), inner=True, live=f)]
    items = [Saved("mlp", f"{tag}activation's saved input{'s' if inner > 1 else ''}", inner * f, "t", inner=True,
                   live=f)]
    if g:  # down keeps an FP8 copy; an activation that keeps its own output (ReLU) keeps it beside
        kept = [Saved("mlp", f"{tag}activation output, kept by the activation", f, "t", inner=True)] if keeps_out else []
        return items + kept + [Saved("mlp", f"{tag}down's input (FP8)", copies * g * width, "t", ("down",),
                                     inner=True, live=f)]
    return items + [Saved("mlp", f"{tag}activation output, down's input", f, "t", () if keeps_out else ("down",),
                          inner=True, live=f)]


def _scores(m: ModelSpec, e: float, drop: bool, fused: bool = False) -> list[Saved]:
    """Eager attention's s x s terms, per key: HF Llama-family code runs softmax(..., dtype=float32)
    and casts back; GPT-2's keeps the dtype, as Megatron's fused scale-mask-softmax does (``fused``: its
    kernel saves its 16-bit output). Forward peak: the fp32 softmax output beside its cast back (4 + e
    bytes), or, without the upcast, the scores beside the softmax output (2e)."""
    a = m.num_attention_heads
    upcast = m.position_embedding != "learned" and e != 4 and not fused
    soft = (4 if upcast else e) * a
    items = [Saved("scores", "softmax output" + (" (fp32)" if upcast else ""), soft, "t", per_key=True, live=soft)]
    if not upcast:  # not saved for backward (softmax keeps its output), alive while softmax runs
        items.append(Saved("scores", "scores, the softmax input", 0, "t", per_key=True, live=e * a))
    if drop:
        items += [Saved("dropout", "attention-probability dropout mask", 1 * a, "t", per_key=True),
                  Saved("scores", "dropped-out probabilities", e * a, "t", per_key=True)]
    elif upcast:
        items.append(Saved("scores", "probabilities cast back to the compute dtype", e * a, "t", per_key=True,
                           live=e * a))
    return items


def _attention(m: ModelSpec, impl: str, e: float, drop: bool, repeat_kv: bool = False,
               compiled: bool = False, fused_qkv: bool = False, fused: bool = False, g: float | None = None,
               proj_copy: bool = False) -> list[Saved]:
    """The attention sub-layer: its norm, the projections' input, q, k, v, scores, output.
    repeat_kv: the model code copies k and v to every query head before the kernel (LitGPT, torchtune).
    fused_qkv: one linear writes q, k and v (LitGPT); without GQA's copies v stays a view of its output,
    so the kernel's saved v keeps the whole qkv output alive (measured: LitGPT 0.5.13, Llama-2-7B).
    g: bytes per element of the input the projections keep (FP8: memory/fp8.py); proj_copy: the
    out-projection keeps an FP8 copy of the kernel's output too."""
    h, a, d, dv = m.hidden_size, m.num_attention_heads, m.qk_head_dim, m.v_dim
    attn_in = tuple(n for n in attention_linears(m) if n in ("q", "k", "v", "q_a", "kv_a"))
    items = norm_tensors(m, h, e, what="attention norm", compiled=compiled, fused=fused)
    gi, fp8 = (g, " (FP8)") if g else (e, "")  # bytes of a linear's saved input
    items.append(Saved("attention", "q/k/v projections' input" + fp8, gi * h, needs=attn_in))
    up = "mla_up_proj" if m.is_mla else ""  # Megatron-Core: MLA's latent norms, up-projections and rope, recomputable
    if m.is_mla:
        items += _mla_latents(m, e, gi, fp8, fused)
    kv_all = repeats_kv(m, impl, repeat_kv)  # HF repeat_kv copies k/v to every head for eager; MLA decompresses
    kv = e * (a if kv_all else m.kv_heads) * (d + dv)
    items.append(Saved("attention", "q (after rope)", e * a * d, "t", live=e * a * d, module=up))
    if fused_qkv and m.kv_heads == a and not m.is_mla:
        items.append(Saved("attention", "k (after rope)", e * a * d, "t", live=e * a * d))
        items.append(Saved("attention", "fused qkv output, kept by v's view", e * a * (2 * d + dv), "t", live=e * a * dv))
    else:
        items.append(Saved("attention", "k and v" + (" (repeated to every head)" if kv_all and not m.is_mla else ""),
                           kv, "t" if kv_all else "kv", live=kv, module=up))
    if impl == "eager":
        items += _scores(m, e, drop, fused)
        items.append(Saved("attention", "attention output, out-projection input", e * a * dv, "t", ("proj",),
                           live=e * a * dv))
    else:
        items.append(Saved("attention", "log-sum-exp (fp32)", 4 * a, "t"))
        items.append(Saved("attention", "kernel output, out-projection input", e * a * dv, "t", live=e * a * dv))
        if proj_copy and g:
            items.append(Saved("attention", "out-projection input, FP8 copy", g * a * dv, "t", ("proj",)))
        if compiled:  # inductor lays the out-projection's input out as a copy of its own
            items.append(Saved("attention", "out-projection input (compiled copy)", e * a * dv, "t", ("proj",)))
    if drop:
        items.append(Saved("dropout", "attention residual dropout mask", 1 * h))
    return items


def _mlp_block(m: ModelSpec, e: float, moe: bool, drop: bool, compiled: bool = False,
               native_act: bool = False, fused: bool = False, g: float | None = None) -> list[Saved]:
    """The MLP sub-layer: its norm(s), input, router and experts (MoE) or the dense MLP. Megatron-Core's recompute
    modules (Saved.module): a dense MLP's checkpoint (mlp) keeps the layer's hidden state, its fused norm's input,
    and rebuilds the rest; an MoE layer's (moe) keeps its norm's output, the router's and shared expert's input."""
    h = m.hidden_size
    mlp_in = ("gate", "up") if m.mlp_type == "gated" else ("up",)
    items = []
    merged = compiled and m.norm_type != "layernorm"  # the compiled MLP norm's output is the MLP input
    dense = "" if moe else "mlp"  # the recompute module of a dense MLP's tensors
    for i in range(m.norms_per_layer - 1):  # the MLP's norm, and Gemma-2's post-norms
        norm = norm_tensors(m, h, e, what="mlp norm" if i == 0 else "post norm", compiled=compiled,
                            keeps_output=merged and i == 0, fused=fused)
        items += norm[:1] + [replace(t, module=dense) for t in norm[1:]] if i == 0 else norm
    if not (m.parallel_attn and m.norms_per_layer == 1) and not merged:  # a parallel block shares the attention's input
        # a dense MLP's norm is fused into its first TE linear, which keeps its output in FP8; an MoE layer's
        # norm is its own module, and the router keeps its 16-bit output (the experts keep FP8 copies)
        fp8_in = g and not moe
        items.append(Saved("mlp", "MLP input" + (" (FP8)" if fp8_in else ""), (g if fp8_in else e) * h, needs=mlp_in,
                           module=dense))
    if moe:
        items += _moe_tensors(m, e, mlp_in, compiled, native_act, fused, g)
    else:
        items += [replace(t, module="mlp") for t in _mlp(m, m.intermediate_size, e, compiled=compiled,
                                                        native_act=native_act, fused=fused, g=g)]
    if drop:
        items.append(Saved("dropout", "MLP residual dropout mask", 1 * h))
    return items


def _moe_tensors(m: ModelSpec, e: float, mlp_in: tuple[str, ...], compiled: bool, native_act: bool, fused: bool,
                 g: float | None) -> list[Saved]:
    """An MoE layer's router and experts, HF Mixtral-style (grouped experts): fp32 router softmax; each of k experts
    gets a copy of the token. Megatron-Core's moe checkpoint rebuilds them all (moe_act the experts' activation
    alone, shared_experts the shared expert alone)."""
    h, k = m.hidden_size, m.num_experts_per_tok
    items = [Saved("mlp", "router probabilities (fp32)", 4 * m.num_experts, module="moe"),
             Saved("mlp", "routing indices (int64) and weights (fp32)", 40 * k + 4, module="moe"),
             Saved("mlp", "expert inputs (k copies)" + (" (FP8)" if g else ""), k * (g or e) * h, "x", mlp_in,
                   module="moe")]
    items += [t if t.module else replace(t, module="moe")
              for t in _mlp(m, m.expert_size, e, k, "experts: ", compiled, native_act, fused, g, act_module="moe_act")]
    if not fused:  # Megatron-Core 0.15 weighs the experts' activation by the routing probabilities instead
        items.append(Saved("mlp", "expert outputs, kept by the routing-weight product", k * e * h, module="moe"))
    if m.shared_expert_size:
        items += [replace(t, module="shared_experts")
                  for t in _mlp(m, m.shared_expert_size, e, 1, "shared expert: ", compiled, native_act, fused, g)]
    return items


def _mla_latents(m: ModelSpec, e: float, gi: float, fp8: str, fused: bool) -> list[Saved]:
    """DeepSeek-V2's compressed latents, each through a norm and an up-projection (its input kept in ``gi`` bytes);
    Megatron-Core's mla_up_proj checkpoint keeps only its own inputs, the latents (the norms' inputs)."""
    items = []
    for rank, lin in ((m.q_lora_rank, "q_b"), (m.kv_lora_rank, "kv_b")):
        if rank:
            norm = norm_tensors(m, rank, e, "attention", f"{lin} latent norm", fused=fused)
            items += norm[:1] + [replace(t, module="mla_up_proj") for t in norm[1:]]
            items.append(Saved("attention", f"{lin} input" + fp8, gi * rank, needs=(lin,), module="mla_up_proj"))
    return items


def repeats_kv(m: ModelSpec, impl: str, repeat_kv: bool = False) -> bool:
    """Whether k and v reach the attention kernel at every query head's width."""
    return impl == "eager" or m.is_mla or repeat_kv


def layer_tensors(m: ModelSpec, impl: str = "sdpa", e: float = 2, moe: bool = False, training: bool = True,
                  repeat_kv: bool = False, compiled: bool = False, fused_qkv: bool = False,
                  native_act: bool = False, fused: bool = False, fp8_input: float | None = None,
                  fp8_proj_copy: bool = False) -> list[Saved]:
    """The tensors one transformer block keeps (module docstring); no dropout outside training.

    compiled: the block under torch.compile (inductor's min-cut partitioner rebuilds cheap pointwise
    results in backward). Measured on H100 with torch 2.11 and HF Llama modules (tests/data/
    gpu_frameworks.json): an RMSNorm keeps only its rstd, the MLP norm also its output (the MLP input),
    a gated MLP gate(x) and up(x) (+ their product when down trains); q, k, v, the attention kernel's
    output and log-sum-exp as in eager; the layer's input stays too. Llama-3.2-3B: 90,216 bytes per token
    against eager's 131,176. fused: Megatron-Core's Transformer Engine kernels (RMSNorm, SwiGLU; norm_tensors,
    _mlp). fp8_input: bytes per element of the inputs TE's FP8 linears keep; fp8_proj_copy: the out-projection
    keeps an FP8 copy too (memory/fp8.py)."""
    drop = training and m.dropout > 0
    return (_attention(m, impl, e, drop, repeat_kv, compiled, fused_qkv, fused, fp8_input, fp8_proj_copy)
            + _mlp_block(m, e, moe, drop, compiled, native_act, fused, fp8_input))


def _adapter_input(name: str, width: float, a: float, e: float, dropout: float, owns_base_input: bool) -> list[Saved]:
    """One adapter's input: a copy in its dtype (and a 1-byte dropout mask) where it casts or drops out,
    else the base layer's own input when nothing else keeps it."""
    split = input_split(name)
    if dropout > 0 or a != e:
        return [Saved("adapters", f"{name} adapter input copy", a * width, split)] + \
            ([Saved("adapters", f"{name} adapter dropout mask", width, split)] if dropout > 0 else [])
    return [Saved("adapters", f"{name} input, kept by lora_A", e * width, split)] if owns_base_input else []


def input_split(name: str) -> str:
    """How TP divides a linear's input: row-parallel ones (the out-projection, down) are split by TP."""
    return "t" if name in ("proj", "down") else "h"


ADAPTER_SOURCES = {"q": "attn", "k": "attn", "v": "attn", "gate": "mlp", "up": "mlp"}  # linears reading one input


def adapter_tensors(m: ModelSpec, targets: frozenset, rank: int, a: float, e: float, dropout: float,
                    moe: bool = False, fused_qkv: bool = False, compiled: bool = False,
                    base_keeps: frozenset = frozenset()) -> list[Saved]:
    """What LoRA adapters save per token (measured: PEFT 0.21 on transformers 5, tests/fidelity; LitGPT
    0.5.13): each targeted linear's input copy in the adapter dtype a (PEFT casts the input to its fp32
    adapter and applies its own dropout, so q, k and v each keep one), the dropout mask (1 B per
    element), and lora_A's r-wide output. One copy serves every adapter reading the same input through
    one cast or dropout: under torch.compile (inductor casts once) and in LitGPT's fused qkv adapter
    (one lora_dropout for q, k and v, whose output it keeps zero-padded to the enabled widths,
    LoRAQKVLinear.zero_pad). With no dropout and the adapter in the compute dtype, lora_A keeps the base
    layer's own input (once per input; not at all where the base matmul keeps it: base_keeps)."""
    lins = {**attention_linears(m), **mlp_linears(m, m.expert_size if moe else m.intermediate_size)}
    copies = m.num_experts_per_tok if moe else 1
    items, seen = [], set()
    for name, lin in lins.items():
        if name not in targets:
            continue
        k = copies if name in ("gate", "up", "down") else 1
        source = ADAPTER_SOURCES.get(name, name)
        first, shares = source not in seen, compiled or (fused_qkv and source == "attn")
        seen.add(source)
        if first or not shares:
            items += _adapter_input(name, k * lin.fan_in, a, e, dropout, first and name not in base_keeps)
        items.append(Saved("adapters", f"{name} lora_A output", k * a * rank))
    qkv = [n for n in ("q", "k", "v") if n in lins]
    enabled = [n for n in qkv if n in targets]
    if fused_qkv and 0 < len(enabled) < len(qkv):
        items.append(Saved("adapters", "fused qkv adapter output, zero-padded", e * sum(lins[n].fan_out for n in enabled), "t"))
    return items


class Local(NamedTuple):  # a NamedTuple: one per point of a sweep, built ~3x faster than a frozen dataclass
    """How the tensors of one micro-batch divide on one GPU."""

    tokens: float  # b · s / cp (inference: one prefill chunk)
    keys: int  # keys each query attends (eager scores)
    tp: int
    sp: bool
    kv_frac: float  # share of the kv heads on one TP rank
    etp: int = 0  # ranks a routed expert is split over (spec.Parallelism.expert_tp); 0: TP's

    def divisor(self, split: str) -> float:
        """What one GPU's share of a tensor is divided by: TP for "t"; TP with sequence parallelism for "h"
        (the hidden-width tensors), else 1; for "kv", the heads one rank holds of the KV heads (kv_frac); for
        "x", TP / etp with sequence parallelism (the expert's etp ranks gather their SP shards), else 1."""
        if split == "x":
            return self.tp / (self.etp or self.tp) if self.sp else 1
        return self.tp if split == "t" else (self.tp if self.sp else 1) if split == "h" else 1 / self.kv_frac

    def bytes(self, t: Saved, live: bool = False) -> float:
        return (t.live if live else t.nbytes) * self.tokens * (self.keys if t.per_key else 1) / self.divisor(t.split)

    def sizes(self, specs) -> list[float]:
        """bytes() of each tensor given as (nbytes, per_key, split): a layer's tensors at once."""
        tokens, keys, div = self.tokens, self.keys, {split: self.divisor(split) for split in ("h", "t", "kv", "x")}
        return [nbytes * tokens * (keys if per_key else 1) / div[split] for nbytes, per_key, split in specs]


def local(m: ModelSpec, impl: str, tokens: float, keys: int, tp: int, sp: bool, repeat_kv: bool = False,
          etp: int | None = None) -> Local:
    kv_eff = m.num_attention_heads if repeats_kv(m, impl, repeat_kv) else m.kv_heads
    return Local(tokens=tokens, keys=keys, tp=tp, sp=sp, kv_frac=math.ceil(kv_eff / tp) / kv_eff, etp=etp or 0)


def kept(t: Saved, trainable: frozenset | None) -> bool:
    """Saved for backward: always, or only when a weight that needs it trains (None: all train)."""
    return not t.needs or trainable is None or any(n in trainable for n in t.needs)


def working_set(m: ModelSpec, items: list[Saved], loc: Local, e: float) -> float:
    """Bytes alive at the forward peak of one block without autograd: the residual stream and the
    normed input (2·h), plus the larger of the attention core and the MLP's F-wide tensors."""
    core = dict.fromkeys(("attention", "mlp"), 0.0)
    for t in items:
        core[SUBLAYER[t.group]] += loc.bytes(t, live=True)
    return loc.tokens * 2 * e * m.hidden_size / (loc.tp if loc.sp else 1) + max(core.values())
