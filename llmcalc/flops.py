"""FLOPs of a forward pass, a training step and a token budget (nanoGPT notebook's flops()).

Only matmuls are counted (norms, softmax, activations are < 1%): [m,k] x [k,n] costs 2mkn.
Backward costs 2x forward (grads for inputs and weights; notebook, Kaplan et al. 2020).
Attention scores and the weighted sum cost 2·q·k·d each per head; ``full`` counts the whole
q x k product as the notebook and PaLM do, ``causal`` only the unmasked triangle (what flash
kernels compute; Megatron-LM halves the product the same way).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple, TYPE_CHECKING

from .breakdown import Breakdown, Quantity, Rows
from .params import attention_linears, count, embedding_projections, matmul_params, mlp_linears
from .spec import ModelSpec, SpecError
from .units import fmt_rate

FORMULAS = ("detailed", "palm", "6nd")
# A budget's time at a typical large-run utilization when --efficiency is not given (Llama 3 38-43% MFU without
# recomputation; PaLM 46% MFU, 57.8% HFU with it). It is the share of the peak the step's FLOPs run at,
# recomputation's included: an HFU, the MFU where nothing is recomputed.
DEFAULT_EFFICIENCY = 0.4
ATTENTION = ("full", "causal")
RECOMPUTE = ("none", "selective", "full")


def attended_pairs(queries: int, keys: int, attention: str, window: int | None = None) -> int:
    """(query, key) pairs that get a score: the last ``queries`` of ``keys`` positions.

    full: queries x keys. causal: query j (1-based position p = keys - queries + j) sees
    min(p, window) keys, summed exactly (sum_{p=a}^{b} min(p, W)).
    """
    if attention == "full":
        return queries * keys
    lo, hi = keys - queries + 1, keys
    w = window or hi
    below = max(0, min(hi, w) - lo + 1)  # positions p <= W contribute p
    first = lo
    last = lo + below - 1
    tri = (first + last) * below // 2 if below else 0
    return tri + (hi - lo + 1 - below) * w


def forward(m: ModelSpec, queries: int, keys: int, attention: str = "full", logits: int | None = None) -> Rows:
    """Forward FLOPs of one sequence: ``queries`` new tokens attending to ``keys`` positions.

    Training and prefill: queries = keys = s. One decode step: queries = 1, keys = context.
    Rows are summed over all layers; dense/lm_head is the output projection (2·n·h·V, or 2·n·p·V
    with a factorized embedding of width p, whose dense/project_in and project_out add 2·q·p·h each)
    over the ``logits`` positions whose logits are computed: every query in training (the default), the
    last alone when a serving engine prefills (vLLM's LogitsProcessor, TensorRT-LLM without
    gather_context_logits and llama.cpp all project only the position they sample).
    """
    if attention not in ATTENTION:
        raise SpecError(f"attention must be one of {', '.join(ATTENTION)}, got {attention!r}")
    L, heads = m.num_hidden_layers, m.num_attention_heads
    r = Rows("FLOP")
    attn = attention_linears(m)
    projections = [lin for n, lin in attn.items() if n != "proj"]
    r.add("attention/kqv", L * 2 * queries * sum(lin.weight for lin in projections),
          "2 x tokens x projection weights", how=("{} layers x 2 x {} tokens x ({})", L, queries, _weights(projections)))
    windowed, whole = attended_pairs(queries, keys, attention, m.sliding_window), attended_pairs(queries, keys, attention)
    pairs = m.window_layers * windowed + (L - m.window_layers) * whole
    pairs_how = ("{} window layers x {} pairs + {} layers x {} pairs", m.window_layers, windowed, L - m.window_layers,
                 whole) if m.window_layers else ("{} query-key pairs", pairs)
    r.add("attention/scores", 2 * pairs * heads * m.qk_head_dim, f"Q @ K^T, {attention}",
          how=("2 x ({}) x {} heads x {} head dim", pairs_how, heads, m.qk_head_dim))
    r.add("attention/reduce", 2 * pairs * heads * m.v_dim, f"softmax @ V, {attention}",
          how=("2 x ({}) x {} heads x {} value dim", pairs_how, heads, m.v_dim))
    r.add("attention/proj", L * 2 * queries * attn["proj"].weight,
          how=("{} layers x 2 x {} tokens x {}", L, queries, _weights([attn["proj"]])))
    r.sum("attention", r.children("attention"))

    if m.dense_layers:
        for name, lin in mlp_linears(m, m.intermediate_size).items():
            r.add(f"mlp/{name}", m.dense_layers * 2 * queries * lin.weight,
                  how=("{} layers x 2 x {} tokens x {}", m.dense_layers, queries, _weights([lin])))
    if m.is_moe:
        _moe_rows(r, m, queries)
    r.sum("mlp", r.children("mlp"))
    for name, lin in embedding_projections(m).items():
        r.add(f"dense/{name}", 2 * queries * lin.weight, f"{lin.fan_in} -> {lin.fan_out}, factorized embedding",
              how=("2 x {} tokens x {}", queries, _weights([lin])))
    rows = queries if logits is None else logits
    r.add("dense/lm_head", 2 * rows * m.embed_dim * m.vocab_size,
          how=("2 x {} tokens x {} x {} vocab", rows, m.embed_dim, m.vocab_size))
    r.sum("forward", ["attention", "mlp", *r.children("dense")])
    return r


def _moe_rows(r: Rows, m: ModelSpec, queries: int) -> None:
    """An MoE layer's matmuls: the router, the k experts each token is routed to, any shared experts."""
    h, k, layers = m.hidden_size, m.num_experts_per_tok, m.moe_layers
    expert = mlp_linears(m, m.expert_size).values()
    r.add("mlp/router", layers * 2 * queries * h * m.num_experts,
          how=("{} MoE layers x 2 x {} tokens x {} hidden x {} experts", layers, queries, h, m.num_experts))
    r.add("mlp/experts", layers * 2 * queries * k * sum(lin.weight for lin in expert), f"{k} active experts per token",
          how=("{} MoE layers x 2 x {} tokens x {} active experts x ({})", layers, queries, k, _weights(expert)))
    if m.shared_expert_size:
        linears = mlp_linears(m, m.shared_expert_size).values()
        gate = h if m.shared_expert_gate else 0  # Qwen2-MoE's hidden -> 1 gate
        r.add("mlp/shared_experts", layers * 2 * queries * (sum(lin.weight for lin in linears) + gate),
              how=("{} MoE layers x 2 x {} tokens x ({} + {} gate)", layers, queries, _weights(linears), gate))


def _weights(linears) -> tuple:
    """Weight elements of some matrices as a formula: in x out + in x out ..."""
    linears = list(linears)
    return (" + ".join(["{} x {}"] * len(linears)), *(n for lin in linears for n in (lin.fan_in, lin.fan_out)))


def palm_how(m: ModelSpec, seq: int) -> tuple:
    """palm_per_token as a formula."""
    return ("6 x {} matmul params + 6 x {} layers x {} heads x ({} + {}) x {} tokens", matmul_params(m),
            m.num_hidden_layers, m.num_attention_heads, m.qk_head_dim, m.v_dim, seq)


def palm_per_token(m: ModelSpec, seq: int) -> int:
    """PaLM (Chowdhery et al. 2022, App. B) model FLOPs per token: 6N + 12·L·H·Q·T.

    N: matmul parameters (params.matmul_params); for MLA, where query/key and value heads
    differ, 12·H·Q becomes 6·H·(Q_qk + Q_v).
    """
    L, H = m.num_hidden_layers, m.num_attention_heads
    return 6 * matmul_params(m) + 6 * L * H * (m.qk_head_dim + m.v_dim) * seq


@dataclass(frozen=True)
class FlopsSettings:
    """Everything a FLOP count depends on besides the model (and, to time a budget, the GPU).

    seq: tokens per sequence. batch: sequences per micro-batch; grad_accum: micro-batches per
      optimizer step (a step is batch x grad_accum sequences of seq tokens).
    attention: full (the whole q x k product, notebook and PaLM) | causal (the unmasked triangle).
    recompute: none | selective (attention core re-run) | full (one more forward of the layers).
    formula: detailed (component sum) | palm (6N + 12LHQT, N = matmul params) | 6nd (2N forward,
      6N training, N = all parameters used per token).
    tokens: a training budget; with it, the compute for the whole budget.
    gpus, efficiency, dtype: with tokens and a GPU, the budget's wall-clock time on ``gpus`` GPUs, the step's
      FLOPs (recomputation's too) at ``efficiency`` of their dense ``dtype`` peak.
    """

    seq: int
    batch: int = 1
    grad_accum: int = 1
    attention: str = "full"
    recompute: str = "none"
    formula: str = "detailed"
    tokens: float | None = None
    gpus: int = 1
    efficiency: float = 1.0
    dtype: str = "bf16"

    def __post_init__(self) -> None:
        for value, choices, what in ((self.formula, FORMULAS, "formula"), (self.recompute, RECOMPUTE, "recompute")):
            if value not in choices:
                raise SpecError(f"{what} must be one of {', '.join(choices)}, got {value!r}")
        for value, what in ((self.seq, "seq"), (self.batch, "batch"), (self.grad_accum, "grad-accum"),
                            (self.gpus, "gpus")):
            if value < 1:
                raise SpecError(f"--{what} must be at least 1, got {value}")
        if not 0 < self.efficiency <= 1:
            raise SpecError(f"--efficiency must be in (0, 1], got {self.efficiency}")
        if self.attention not in ATTENTION:  # forward()'s own check and message
            raise SpecError(f"attention must be one of {', '.join(ATTENTION)}, got {self.attention!r}")

    @property
    def sequences(self) -> int:
        """Sequences per optimizer step: batch x grad_accum."""
        return self.batch * self.grad_accum

    @property
    def step_tokens(self) -> int:
        """Tokens per optimizer step: batch x grad_accum x seq."""
        return self.sequences * self.seq


_SETTINGS = fields(FlopsSettings)


class _Step(NamedTuple):  # a NamedTuple: flops loads on every CLI call (see dtypes.Dtype)
    """The forward FLOPs of one step, and what each kind of recomputation re-runs of it."""

    forward: float
    core: float  # attention scores + reduce: what selective recomputation re-runs
    layers: float  # the transformer layers: what full recomputation re-runs
    note: str  # how the total was counted
    core_how: tuple = ("0",)  # core and layers as formulas (breakdown.formula)
    layers_how: tuple = ("forward",)


def _detailed_step(r: Rows, m: ModelSpec, s: FlopsSettings) -> _Step:
    """Component sum of forward() (nanoGPT notebook's flops()) over the step's sequences."""
    fwd, n = forward(m, s.seq, s.seq, s.attention), s.sequences
    for row in fwd.build():  # components as shares of the forward pass; forward itself of the step
        share = "total" if row.name == "forward" else "forward"
        if fwd.parts(row.name):
            r.sum(row.name, fwd.parts(row.name), row.note, total=share)
        else:
            r.add(row.name, n * row.value, row.note, total=share,
                  how=row.how if n == 1 else ("{} sequences x {}", n, row.how))
    return _Step(forward=r["forward"], core=n * (fwd["attention/scores"] + fwd["attention/reduce"]),
                 layers=n * (fwd["attention"] + fwd["mlp"]), note="component sum",
                 core_how=("attention/scores + attention/reduce",), layers_how=("attention + mlp",))


def _palm_step(r: Rows, m: ModelSpec, s: FlopsSettings) -> _Step:
    """Forward as (6N + 12LHQT) / 3 per token, N = matmul params (PaLM, Chowdhery et al. 2022, App. B)."""
    forward_step = r.add("forward", s.step_tokens * (palm_per_token(m, s.seq) / 3), "(6N + 12LHQT) / 3 per token",
                         how=("{} tokens x ({}) / 3", s.step_tokens, palm_how(m, s.seq)))
    # the attention core (scores + reduce) is 2·L·H·(Q_qk + Q_v)·T of the forward per token
    L, H = m.num_hidden_layers, m.num_attention_heads
    core = s.step_tokens * 2 * L * H * (m.qk_head_dim + m.v_dim) * s.seq
    counts = count(m)
    head = counts["lm_head"] + (counts["embedding/token"] if m.tie_word_embeddings else 0)  # a tied head's matrix
    # is the embedding's (its own row holds only a bias, if any)
    return _Step(forward=forward_step, core=core, layers=forward_step - s.step_tokens * 2 * head,
                 note="PaLM 6N + 12LHQT",
                 core_how=("{} tokens x 2 x {} layers x {} heads x ({} + {}) x {} tokens", s.step_tokens, L, H,
                           m.qk_head_dim, m.v_dim, s.seq),
                 layers_how=("forward - {} tokens x 2 x {} LM head params", s.step_tokens, head))


def _6nd_step(r: Rows, m: ModelSpec, s: FlopsSettings) -> _Step:
    """Forward as 2N per token (6N per token trained), N = all parameters used per token (Kaplan et al. 2020)."""
    active = count(m)["active"]
    forward_step = r.add("forward", s.step_tokens * (2 * active), "2N per token",
                         how=("{} tokens x 2 x {} params", s.step_tokens, active))
    return _Step(forward=forward_step, core=0, layers=forward_step, note="6N per token")


_STEPS = {"detailed": _detailed_step, "palm": _palm_step, "6nd": _6nd_step}


def _training_step(m: ModelSpec, s: FlopsSettings) -> Rows:
    """Rows of one training step: forward, backward (2 x forward), any recomputation, total, per token."""
    r = Rows("FLOP")
    step = _STEPS[s.formula](r, m, s)
    r.add("backward", 2 * step.forward, "2 x forward (input and weight grads)", how=("2 x forward",))
    # Activation recomputation re-runs part of the forward before the backward (Korthikanti et al.)
    parts = ["forward", "backward"]
    if s.recompute != "none":
        selective = s.recompute == "selective"
        r.add("recompute", step.core if selective else step.layers,
              "attention core re-run" if selective else "one more forward of the layers",
              how=step.core_how if selective else step.layers_how)
        parts.append("recompute")
    r.sum("total", parts, step.note + (f", with {s.recompute} recomputation" if s.recompute != "none" else ""))
    r.add("per_token/forward", step.forward / s.step_tokens, total=None, how=("forward / {} tokens", s.step_tokens))
    r.add("per_token/total", r["total"] / s.step_tokens, total=None, how=("total / {} tokens", s.step_tokens))
    r.add("model_flops", s.step_tokens * palm_per_token(m, s.seq), "PaLM 6N + 12LHQT per step", total=None,
          how=("{} tokens x ({})", s.step_tokens, palm_how(m, s.seq)))
    return r


def flops_breakdown(m: ModelSpec, s: FlopsSettings, gpu: GPUSpec | None = None) -> Breakdown:
    """FLOPs for one training step of ``batch x grad_accum`` sequences of ``seq`` tokens.

    formula: detailed (component sum), palm (6N + 12LHQT, N = matmul params), or 6nd (2N
    forward, 6N training, N = all parameters used per token). With ``s.tokens``: the compute for
    the whole budget, and with a ``gpu`` its wall-clock time on ``s.gpus`` of them at
    ``s.efficiency`` of their dense ``s.dtype`` peak.
    """
    peak_flops = gpu.peak(s.dtype) if gpu else None
    r = _training_step(m, s)
    model_flops = r["model_flops"]
    summary = {"forward": Quantity(r["forward"], "FLOP"), "total": Quantity(r["total"], "FLOP"),
               "model_flops": Quantity(model_flops, "FLOP"),
               "model_flops_ratio": Quantity(model_flops / r["total"], "count"),
               "tokens_per_step": Quantity(s.step_tokens, "token"),
               "per_token_total": Quantity(r["per_token/total"], "FLOP")}
    notes = [f"attention counted {s.attention}" if s.formula == "detailed" else f"formula {s.formula}",
             "matmul FLOPs only; backward = 2 x forward"]
    if s.tokens is not None:
        train = s.tokens * r["per_token/total"]
        summary["train_flops"] = Quantity(train, "FLOP")
        if peak_flops:
            # time = compute / (n · peak · efficiency): the notebook's 6ND / (8 x 312e12 x 0.3)
            seconds = train / (s.gpus * peak_flops * s.efficiency)
            summary.update(train_time=Quantity(seconds, "s"), gpu_hours=Quantity(seconds * s.gpus / 3600, "count"))
            notes.append(f"time at {s.efficiency:.0%} of {s.gpus} x {fmt_rate(peak_flops, 'FLOP/s')}"
                         + (f" (the step's FLOPs with {s.recompute} recomputation at that share: an HFU)"
                            if s.recompute != "none" else ""))
    return Breakdown(
        command="flops", title=f"FLOPs of {m.name}, one training step", model=m.name,
        gpu=gpu.name if gpu else None, rows=r.build(), summary=summary, notes=tuple(notes),
        inputs={f.name: getattr(s, f.name) for f in _SETTINGS},  # asdict(s), without its deep copies of plain values
    )


from . import _make_callable  # noqa: E402 - llmcalc.flops(...) is the API function (llmcalc/__init__.py)

if TYPE_CHECKING:  # annotations only: a GPU lookup loads it
    from .gpuspec import GPUSpec

_make_callable(__name__)
