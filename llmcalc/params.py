"""Exact parameter counts from a ModelSpec, component by component (nanoGPT notebook's params()).

Every count is a matrix shape (in x out) plus its bias, one line each; totals are sums of the
rows, so the table cannot disagree with itself. The closed form 12·L·h² is only an estimate;
this counts GQA, gated MLPs, biases, norms, MoE experts and MLA's low-rank projections exactly.
"""

# No `from __future__ import annotations`: it makes this module's NamedTuples slower to build (see dtypes.Dtype).

import functools
from typing import NamedTuple

from .breakdown import Breakdown, Quantity, Rows
from .dtypes import DTYPE_BYTES, FLOAT_DTYPES
from .spec import ModelSpec, SpecError


class Optimizer(NamedTuple):  # a NamedTuple: params loads on every CLI call (see dtypes.Dtype)
    """The states an optimizer keeps (their row names under ``optimizer/``) and their width."""

    states: tuple[str, ...]  # memory's rows, one per state (bytes: memory/states.model_state_bytes)
    nbytes: float | None = None  # bytes per state value; None: the precision's (params: the weights' dtype)
    factored: bool = False  # one state of rows + cols values per matrix, not one value per parameter
    paged: bool = False  # bitsandbytes' paged states: CUDA unified memory, outside PyTorch's allocator


# AdamW keeps m and v (Loshchilov & Hutter); 8-bit Adam quantizes both to 1 byte (Dettmers et al.
# 2022); SGD with momentum and Lion keep one buffer; Adafactor keeps a factored second moment,
# (rows + cols) per matrix and full size for vectors (Shazeer & Stern 2018).
OPTIMIZERS: dict[str, Optimizer] = {
    "adamw": Optimizer(("optimizer/adam_m", "optimizer/adam_v")),
    "adam": Optimizer(("optimizer/adam_m", "optimizer/adam_v")),
    "adamw-8bit": Optimizer(("optimizer/adam_m", "optimizer/adam_v"), 1),
    # bitsandbytes PagedAdamW / PagedAdamW8bit: 32-bit or 8-bit states in paged (unified) memory
    "paged-adamw": Optimizer(("optimizer/adam_m", "optimizer/adam_v"), 4, paged=True),
    "paged-adamw-8bit": Optimizer(("optimizer/adam_m", "optimizer/adam_v"), 1, paged=True),
    "sgd": Optimizer(()),
    "sgd-momentum": Optimizer(("optimizer/momentum",)),
    "lion": Optimizer(("optimizer/momentum",)),
    "adafactor": Optimizer(("optimizer/adafactor_v",), factored=True),
}


class Linear(NamedTuple):  # a NamedTuple: params loads on every CLI call (see dtypes.Dtype)
    """One weight matrix (in x out) and optionally its bias (out)."""

    fan_in: int
    fan_out: int
    bias: bool = False

    @property
    def params(self) -> int:
        return self.fan_in * self.fan_out + (self.fan_out if self.bias else 0)

    @property
    def weight(self) -> int:
        return self.fan_in * self.fan_out

    @property
    def how(self) -> tuple:
        """Its count as a formula (breakdown.formula): in x out, plus the bias."""
        return ("{} x {} + {}", self.fan_in, self.fan_out, self.fan_out) if self.bias else ("{} x {}", self.fan_in, self.fan_out)


def sum_how(hows: list) -> tuple:
    """The formula of a sum of formulas, each in parentheses: (a) + (b) + (c)."""
    return (" + ".join(["({})"] * len(hows)), *hows)


def norm_params(m: ModelSpec, width: int, bias: bool | None = None) -> int:
    """LayerNorm: weight + bias; RMSNorm: weight; parameter-free norms: 0.

    ``bias`` overrides m.norm_bias (the q/k norms' own qk_norm_bias).
    """
    if not m.norm_affine:
        return 0
    b = m.norm_bias if bias is None else bias
    return width * (2 if m.norm_type == "layernorm" and b else 1)


def embedding_projections(m: ModelSpec) -> dict[str, Linear]:
    """A factorized embedding's bias-free projections (OPT's project_in/out); {} when there is none."""
    if not m.embedding_projected:
        return {}
    p, h = m.embed_dim, m.hidden_size
    return {"project_in": Linear(p, h), "project_out": Linear(h, p)}


def attention_linears(m: ModelSpec) -> dict[str, Linear]:
    """The attention projections of one layer, keyed by row name under attention/."""
    h, heads, kv = m.hidden_size, m.num_attention_heads, m.kv_heads
    out = Linear(heads * m.v_dim, h, m.attention_out_bias)
    if m.is_mla:  # DeepSeek-V2 §2.1: low-rank q and joint kv compression, decoupled rope key
        q = ({"q_a": Linear(h, m.q_lora_rank, m.attention_bias),
              "q_b": Linear(m.q_lora_rank, heads * m.qk_head_dim)}
             if m.q_lora_rank else {"q": Linear(h, heads * m.qk_head_dim)})
        return {**q,
                "kv_a": Linear(h, m.kv_lora_rank + m.qk_rope_head_dim, m.attention_bias),
                "kv_b": Linear(m.kv_lora_rank, heads * (m.qk_nope_head_dim + m.v_head_dim)),
                "proj": out}
    d = m.qk_head_dim
    return {"q": Linear(h, heads * d, m.attention_bias),
            "k": Linear(h, kv * d, m.attention_bias),
            "v": Linear(h, kv * d, m.attention_bias),
            "proj": out}


def largest_block_matrix(m: ModelSpec) -> int:
    """Elements of the biggest weight matrix inside a block (attention projections, dense MLP or expert)."""
    lins = {**attention_linears(m), **mlp_linears(m, max(m.intermediate_size, m.expert_size or 0))}
    return max(lin.fan_in * lin.fan_out for lin in lins.values())


def mlp_linears(m: ModelSpec, width: int, bias: bool | None = None) -> dict[str, Linear]:
    """A dense MLP of the given width: up/down, plus gate when gated (SwiGLU/GeGLU)."""
    h = m.hidden_size
    b = m.mlp_bias if bias is None else bias
    layers = {"up": Linear(h, width, b), "down": Linear(width, h, b)}
    if m.mlp_type == "gated":
        layers = {"gate": Linear(h, width, b), **layers}
    return layers


def layer_norms(m: ModelSpec) -> dict[str, int]:
    """Norm parameters inside one block: the hidden-size norms, q/k norms, MLA latent norms."""
    d = m.qk_head_dim
    qk = {"none": 0, "head": 2 * d,
          "full": (m.num_attention_heads + m.kv_heads) * d}[m.qk_norm]
    latent = (m.q_lora_rank or 0) + m.kv_lora_rank if m.is_mla else 0
    return {"layers": m.norms_per_layer * norm_params(m, m.hidden_size),
            "qk": norm_params(m, 1, m.qk_norm_has_bias) * qk,
            "latent": norm_params(m, 1) * latent}


def expert_params(m: ModelSpec) -> int:
    """One routed expert: a gated or plain MLP of the expert width."""
    return sum(lin.params for lin in mlp_linears(m, m.expert_size).values())


def moe_parts(m: ModelSpec) -> dict[str, int]:
    """One MoE layer's MLP side: router, all routed experts, shared experts and their gate."""
    h, e = m.hidden_size, m.num_experts
    shared = sum(lin.params for lin in mlp_linears(m, m.shared_expert_size).values()) if m.shared_expert_size else 0
    return {"router": h * e + (e if m.router_bias else 0),
            "experts": e * expert_params(m),
            "shared_experts": shared + (h if m.shared_expert_gate else 0)}


def _embedding_rows(m: ModelSpec, r: Rows) -> None:
    h, V, p = m.hidden_size, m.vocab_size, m.embed_dim
    r.add("embedding/token", V * p, "vocab x hidden" if p == h else f"vocab x embedding_proj_dim {p}",
          how=("{} vocab x {} width", V, p))
    if m.position_embedding == "learned":
        r.add("embedding/position", (m.max_position_embeddings + m.position_offset) * h, "learned table",
              how=("({} positions + {} offset) x {} hidden", m.max_position_embeddings, m.position_offset, h)
              if m.position_offset else ("{} positions x {} hidden", m.max_position_embeddings, h))
    for name, lin in embedding_projections(m).items():  # factorized embedding: p -> h in, h -> p out
        r.add(f"embedding/{name}", lin.params, _shape(lin), how=lin.how)
    r.sum("embedding", r.children("embedding"))


def _attention_rows(m: ModelSpec, r: Rows) -> None:
    L, attn = m.num_hidden_layers, attention_linears(m)
    if m.is_mla:
        for name, lin in attn.items():
            r.add(f"attention/{name}", L * lin.params, _shape(lin), how=("{} layers x ({})", L, lin.how))
    else:  # the notebook's single qkv row; the note gives each projection's shape
        r.add("attention/qkv", L * sum(attn[k].params for k in "qkv"),
              f"q {_shape(attn['q'])}, k and v {_shape(attn['k'])} each",
              how=("{} layers x ({})", L, sum_how([attn[k].how for k in "qkv"])))
        r.add("attention/proj", L * attn["proj"].params, _shape(attn["proj"]),
              how=("{} layers x ({})", L, attn["proj"].how))
    r.sum("attention", r.children("attention"))


def _mlp_rows(m: ModelSpec, r: Rows) -> None:
    if m.dense_layers:
        for name, lin in mlp_linears(m, m.intermediate_size).items():
            r.add(f"mlp/{name}", m.dense_layers * lin.params,
                  _shape(lin) + (f", {m.dense_layers} dense layers" if m.is_moe else ""),
                  how=("{} layers x ({})", m.dense_layers, lin.how))
    if m.is_moe:
        hows = _moe_hows(m)
        for name, value in moe_parts(m).items():
            if value:
                r.add(f"mlp/{name}", m.moe_layers * value, f"{m.moe_layers} MoE layers",
                      how=("{} MoE layers x ({})", m.moe_layers, hows[name]))
    r.sum("mlp", r.children("mlp"))


def _norm_rows(m: ModelSpec, r: Rows) -> None:
    L, h, norms = m.num_hidden_layers, m.hidden_size, layer_norms(m)
    r.add("norm/layers", L * norms["layers"], f"{m.norms_per_layer} {m.norm_type} per layer",
          how=("{} layers x {} norms x {} params", L, m.norms_per_layer, norm_params(m, h)))
    if norms["qk"]:
        r.add("norm/qk", L * norms["qk"], "q and k norms", how=("{} layers x {} params of q and k norms", L, norms["qk"]))
    if norms["latent"]:
        r.add("norm/latent", L * norms["latent"], "MLA latent norms",
              how=("{} layers x {} params of latent norms", L, norms["latent"]))
    one = ("{} hidden x {} ({})", h, norm_params(m, h) // h, "weight and bias" if norm_params(m, h) == 2 * h else "weight")
    if m.embedding_norm:
        r.add("norm/embedding", norm_params(m, h), how=one)
    if m.final_norm:
        r.add("norm/final", norm_params(m, h), how=one)
    r.sum("norm", r.children("norm"))


def count(m: ModelSpec) -> Rows:
    """All parameter rows, whole model; see params_breakdown for the rendered form."""
    h, V, p = m.hidden_size, m.vocab_size, m.embed_dim
    r = Rows("params")
    for rows in (_embedding_rows, _attention_rows, _mlp_rows, _norm_rows):
        rows(m, r)
    head = 0 if m.tie_word_embeddings else V * p
    r.add("lm_head", head + (V if m.lm_head_bias else 0), "tied to embedding/token" if m.tie_word_embeddings
          else "hidden x vocab" if p == h else f"embedding_proj_dim {p} x vocab",
          how=("{} width x {} vocab" + (" + {} bias" if m.lm_head_bias else ""), p, V, V) if not m.tie_word_embeddings
          else ("0 (tied)" + (" + {} bias" if m.lm_head_bias else ""), V))
    r.sum("total", ["embedding", "attention", "mlp", "norm", "lm_head"])
    idle = m.moe_layers * (m.num_experts - m.num_experts_per_tok) * expert_params(m)
    r.add("active", r["total"] - idle,
          f"{m.num_experts_per_tok} of {m.num_experts} experts per token" if m.is_moe else "dense: all parameters",
          how=("total - {} MoE layers x {} idle experts x {}", m.moe_layers, m.num_experts - m.num_experts_per_tok,
               expert_params(m)) if m.is_moe else ("total",))
    return r


@functools.lru_cache(maxsize=256)  # pure, and asked again at every point of a flops or mfu sweep
def matmul_params(m: ModelSpec, active: bool = True) -> int:
    """PaLM's N for 6N + 12LHQT: parameters used in matmuls per token.

    The notebook's rule: drop the learned position table and an untied input embedding (lookups,
    not matmuls); keep a tied embedding, which is the output head. Norms stay in, as there. A
    factorized embedding's project_in/out are matmuls and stay in.
    """
    r = count(m)
    n = r["active" if active else "total"]
    n -= r["embedding/position"] if "embedding/position" in r else 0
    if not m.tie_word_embeddings:
        n -= r["embedding/token"]
    return int(n)


def params_breakdown(m: ModelSpec, dtype: str | None = None, optimizer: str = "adamw",
                     precision: str | None = None) -> Breakdown:
    """Parameters per component, plus weight and checkpoint bytes in ``dtype`` (None: a quantized checkpoint's
    own format, from its quantization_config, else bf16).

    weight_bytes: memory.placement.ParamSplit.weight_bytes, the rule `memory` and `latency` use too (quantized dtypes
    keep embeddings, norms and head in 16-bit and add group scales). checkpoint_bytes, a resumable training
    checkpoint: the weights, the fp32 master copy and the optimizer states, as the training ``precision`` keeps them
    (`memory`'s --precision and default: mixed for 16-bit weights, 2 + 4 + 4 + 4 = 14 B/param with AdamW, as
    Megatron-LM and DeepSpeed save bf16 weights beside fp32 optimizer states; the notebook's fp32, 4 + 4 + 4 = 12
    bytes/param -> 1.49 GB for GPT-2 124M; pure bf16, 6); Adafactor's one state is (rows + cols) per matrix. A
    quantized dtype is an inference format: its checkpoint holds the weights alone.
    """
    from .memory.placement import model_params

    if optimizer not in OPTIMIZERS:
        raise SpecError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    r = count(m)
    split = model_params(m)
    total = int(r["total"])
    shipped = dtype is None and bool(m.quant_method)
    dtype = m.quant_dtype if shipped else dtype or ("fp32" if precision == "fp32" else "bf16")
    fmt, kept = None, 0.0
    if shipped:  # as `memory --mode infer` loads it (quant.py loaded only then: params runs on every start-up path)
        from .quant import checkpoint_layout

        fmt, kept = checkpoint_layout(m)
    weights = sum(split.weight_bytes(dtype, fmt=fmt, kept=kept, fan_in=m.hidden_size).values())
    opt = OPTIMIZERS[optimizer]
    trained = dtype in FLOAT_DTYPES
    master, state_b, precision = _checkpointed(opt, dtype, precision) if trained else (0.0, 0, None)
    states = len(opt.states) if trained else 0
    checkpoint = weights + total * master + (split.factored if opt.factored else total) * states * state_b
    per_param = weights / total
    return Breakdown(
        command="params",
        title=f"Parameters of {m.name}",
        model=m.name,
        rows=r.build() + _per_layer(m),
        summary={"total": Quantity(total, "params"), "active": Quantity(int(r["active"]), "params"),
                 "weight_bytes": Quantity(round(weights), "byte"),  # GGUF types: an average, whole bytes
                 "checkpoint_bytes": Quantity(round(checkpoint), "byte"),
                 "bytes_per_param": Quantity(_int(per_param), "count"), "optimizer_states": Quantity(states, "count"),
                 "bytes_per_state": Quantity(state_b, "count")},
        inputs={"dtype": dtype, "optimizer": optimizer, "precision": precision},
        notes=(f"weights {per_param:.3g} B/param in {dtype}" + (f" as the checkpoint ships ({m.quant_method})"
                                                                 if shipped else "")
               + ("" if per_param == DTYPE_BYTES[dtype] else ": block linears quantized, the rest 16-bit")
               + (f"; checkpoint adds {_beside_the_weights(master, states, state_b, optimizer, opt.factored)} "
                  f"(--precision {precision})"
                  if trained else f"; {dtype} is an inference format: the checkpoint holds the weights alone"),),
    )


def _beside_the_weights(master: float, states: int, state_b: float, optimizer: str, factored: bool) -> str:
    held = [f"an fp32 master copy ({master:g} B/param)"] if master else []
    if states:
        held.append(f"{states} {optimizer} state{'s' * (states != 1)} at {state_b:g} B each"
                    + (", (rows + cols) values per matrix" if factored else ""))
    return " and ".join(held) or f"nothing ({optimizer} keeps no state)"


def _checkpointed(opt: Optimizer, dtype: str, precision: str | None) -> tuple[float, float, str]:
    """(fp32 master bytes a parameter, bytes a state value, the precision) a training checkpoint holds beside the
    weights: `memory`'s training precision (memory.precision; default mixed for 16-bit weights, fp32 for fp32), an
    8-bit optimizer's states at its own width."""
    from .memory.precision import PRECISIONS, train_precision

    if precision is not None and (precision == "fp32") != (dtype in ("fp32", "tf32")):
        raise SpecError(f"--precision {precision} saves {'fp32' if precision == 'fp32' else '16-bit'} weights; "
                        f"--dtype {dtype} contradicts it: give --dtype {'fp32' if precision == 'fp32' else 'bf16'}, "
                        f"or --precision {'mixed' if precision == 'fp32' else 'fp32'}")
    precision, _ = train_precision(precision, dtype, "full")
    p = PRECISIONS[precision]
    return p.master, p.state if opt.nbytes is None else opt.nbytes, precision


def _per_layer(m: ModelSpec) -> tuple:
    """One block's parameters by part (no share column), each with its formula."""
    attn, norms = attention_linears(m).values(), [v for v in layer_norms(m).values() if v]
    rows = Rows("params", total=None)
    rows.add("per_layer/attention", sum(lin.params for lin in attn), "one block", how=sum_how([lin.how for lin in attn]))
    rows.add("per_layer/norm", sum(norms), "one block", how=(" + ".join(["{}"] * len(norms)) or "0", *norms))
    if m.dense_layers:
        mlp = mlp_linears(m, m.intermediate_size).values()
        rows.add("per_layer/mlp", sum(lin.params for lin in mlp), "one block", how=sum_how([lin.how for lin in mlp]))
    if m.is_moe:
        rows.add("per_layer/mlp_moe", sum(moe_parts(m).values()), "one block",
                 how=("{} + {} + {}", *_moe_hows(m).values()))
    return rows.build()


def _moe_hows(m: ModelSpec) -> dict[str, tuple]:
    """moe_parts' counts as formulas: router, routed experts, shared experts and their gate."""
    h, e = m.hidden_size, m.num_experts
    shared = sum_how([lin.how for lin in mlp_linears(m, m.shared_expert_size).values()]) if m.shared_expert_size else ("0",)
    return {"router": ("{} hidden x {} experts" + (" + {} bias" if m.router_bias else ""), h, e, e),
            "experts": ("{} experts x ({})", e, sum_how([lin.how for lin in mlp_linears(m, m.expert_size).values()])),
            "shared_experts": ("{}" + (" + {} gate" if m.shared_expert_gate else ""), shared, h)}


def _shape(lin: Linear) -> str:
    return f"{lin.fan_in} x {lin.fan_out}" + (" + bias" if lin.bias else "")


def _int(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


from . import _make_callable  # noqa: E402 - llmcalc.params(...) is the API function (llmcalc/__init__.py)

_make_callable(__name__)
