"""`plan`: every training layout of a cluster, the ones that fit, ranked by estimated step time.

A layout is TP x CP x PP x DP = GPUs (EP inside DP x CP), virtual pipeline stages, ZeRO stage (0 plain
data parallelism, 1 Megatron's distributed optimizer, 3 FSDP), recomputation, sequence parallelism
(on with TP) and the micro-batch, whose count per step follows from the global batch. Each is timed
by steptime.py from per-token pieces of the model computed once; the memory of the fastest is then
checked with the training memory model (memory/pieces.py, the micro-batches in flight under the
layout's schedule; Megatron-Core's accounting: bf16 weights, fp32 gradients (16-bit with grad_reduce
"bf16" or "fp16", which step() copies to fp32), fp32 master weights and Adam states, sharded by the ZeRO
stage; flash attention, eager for an unfused core; under --dtype fp8, Transformer Engine's FP8 copies and inputs, memory/fp8.py) until
``top`` layouts with distinct degrees fit. A degree tuple whose leanest variant (full recomputation,
highest ZeRO stage, one sequence, no interleaving) does not fit, nor, offloaded, its leanest without
recomputation, is dropped without timing its others. ZeRO-3 (FSDP) is tried without pipeline parallelism
only: it shards whole models, not stages. A one-stage layout without recomputation that does not fit is
tried again with the fewest layers' activations offloaded to host memory that fit it (Planner.offloaded).
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import replace
from typing import Iterator, NamedTuple

from .collectives import check_links, ep_warmup
from .exposure import dp_traffic, host_rate, offload_exposed, optimizer_step
from .kernels import attention_kernel
from .memory.fp8 import params_in_fp8
from .memory.placement import check_etp, check_layout, pipeline_in_flight
from .memory.recompute import DEFAULT_RECOMPUTE_MODULES, check_recompute_modules
from .planinputs import (MAX_GPUS, SEARCHED_ZERO, Constraints, Target,  # noqa: F401 - SEARCHED_ZERO, links_of
                         fp8_settings, impossible, links_of, offloading)  # re-exported, as are Constraints, Target
from .spec import ModelSpec, Parallelism, SpecError
from .modelcost import ModelCost, model_cost
from .steptime import GRAD_BYTES, PARAM_BYTES, Layout, MicroBatch, StepTime, micro_batch, step_time

MICRO_BATCHES = (1, 2, 4, 8, 16)
MAX_CP = 32
MIN_CP_TOKENS = 4096  # context parallelism splits no sequence below this many tokens per rank
MAX_VPP = 8


class Ranked(NamedTuple):
    """A layout that fits, with its time and memory."""

    layout: Layout
    time: StepTime
    memory: float  # bytes on the fullest GPU
    usable: float
    host: float = 0.0  # bytes of offloaded activations in host memory, per GPU


def _powers(limit: int) -> list[int]:
    return [1 << i for i in range(limit.bit_length()) if 1 << i <= limit]


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def degree_tuples(m: ModelSpec, node: int, t: Target, c: Constraints) -> Iterator[tuple[int, int, int, int, int]]:
    """(tp, cp, pp, dp, ep) that multiply out to the GPUs, divide the global batch and suit the model."""
    for tp in [c.tp] if c.tp else _powers(min(c.max_tp or node, t.gpus)):
        for cp in [c.cp] if c.cp else _cp_choices(t.seq, c.attention_kernel):
            if t.gpus % (tp * cp):
                continue
            for pp in [c.pp] if c.pp else _divisors(t.gpus // (tp * cp)):
                dp = t.gpus // (tp * cp * pp)
                if pp > m.num_hidden_layers or t.gpus % (tp * cp * pp) or (c.dp and dp != c.dp) or t.global_batch % dp \
                        or c.offload_rules_out(pp, cp):
                    continue
                etps = etp_choices(m, tp, c)
                if not etps:
                    continue
                for ep in [c.ep] if c.ep else _ep_choices(m, tp // min(etps) * dp * cp):
                    if _suits(m, t.gpus, tp, pp, dp, cp, ep, min(etps)):
                        yield tp, cp, pp, dp, ep


def _cp_choices(seq: int, kernel: str) -> list[int]:
    """Powers of two splitting the sequence into 2 cp equal chunks (causal load balancing) of at least
    MIN_CP_TOKENS tokens a rank; none with an unfused attention core (Megatron-Core's ring runs in Transformer
    Engine's fused attention)."""
    return [x for x in _powers(MAX_CP) if x == 1 or (kernel != "unfused" and seq % (2 * x) == 0
                                                       and seq // x >= MIN_CP_TOKENS)]


def _ep_choices(m: ModelSpec, ranks: int) -> list[int]:
    """Expert-parallel degrees: divisors of the ranks that share out a layer's experts (dp x cp, times tp / etp)
    that divide the experts; 1 for a dense model."""
    return [e for e in _divisors(ranks) if m.num_experts % e == 0] if m.is_moe else [1]


def etp_choices(m: ModelSpec, tp: int, c: Constraints) -> list[int]:
    """Expert tensor-parallel degrees for TP ``tp``: the one fixed (if it divides tp), else TP's (Megatron-Core's
    default) and, for an MoE model, 1 (experts whole, EP spanning TP ranks)."""
    if c.etp:
        return [c.etp] if tp % c.etp == 0 else []
    return [tp, 1] if m.is_moe and tp > 1 else [tp]


def _suits(m: ModelSpec, gpus: int, tp: int, pp: int, dp: int, cp: int, ep: int, etp: int) -> bool:
    """The memory model's own layout check (heads TP can split, experts EP can)."""
    try:
        check_layout(m, Parallelism(gpus, tp, pp, dp, cp, ep, tp > 1, etp if m.is_moe else None))
    except SpecError:
        return False
    return True


# per step, not per micro-batch: the ZeRO stage, the micro-batch count and (last) the layers offloaded
_ZERO, _COUNT, _OFFLOAD = (Layout._fields.index(f) for f in ("zero", "micro_batches", "offload"))
assert _OFFLOAD == len(Layout._fields) - 1


def variants(m: ModelSpec, t: Target, c: Constraints, deg: tuple) -> Iterator[Layout]:
    """Every layout of one degree tuple: ZeRO stage, recomputation, micro-batch, virtual stages."""
    tp, cp, pp, dp, ep = deg
    per_replica = t.global_batch // dp
    sp = (tp > 1 and (c.tp_async or c.tp_overlap)) if c.sp is None else c.sp and tp > 1  # none before async TP
    sizes, zeros = _states(t, c, pp)
    etps = [e for e in etp_choices(m, tp, c) if (tp // e * dp * cp) % ep == 0]
    mbs = [c.micro_batch] if c.micro_batch else [b for b in MICRO_BATCHES if per_replica % b == 0]
    for mb in mbs:
        if per_replica % mb:
            continue
        micro = per_replica // mb
        for zero in zeros:
            for recompute in ["none"] if c.offload else c.recompute:  # a fixed offload runs without recomputation
                for v in _vpps(m, c, pp, micro):
                    for etp in etps:
                        yield Layout(tp, pp, dp, cp, ep, v, zero, recompute, sp, mb, micro, c.tp_overlap, c.pp_overlap,
                                     c.dp_overlap, *sizes, etp, c.ep_overlap, c.backward_prefetch, c.tp_async,
                                     c.offload or 0)


def _vpps(m: ModelSpec, c: Constraints, pp: int, micro: int) -> list[int]:
    """Virtual stages a pipeline of ``pp`` may use: interleaving needs a whole number of rounds of p
    micro-batches and a layer per virtual stage. A fixed --vpp above 1 leaves out layouts without a pipeline."""
    if pp == 1:
        return [1] if (c.vpp or 1) == 1 or c.unpipelined or c.pp == 1 else []  # --pp 1: --vpp moot (cli warns)
    return [v for v in ([c.vpp] if c.vpp else range(1, MAX_VPP + 1))
            if v == 1 or (micro % pp == 0 and pp * v <= m.num_hidden_layers)]


def _states(t: Target, c: Constraints, pp: int) -> tuple[tuple[int, int], list[int]]:
    """(bytes a gradient, bytes a gathered parameter) and the ZeRO stages a pipeline of ``pp`` may use
    (Constraints.stages)."""
    gathered = 1 if c.fp8_params and t.dtype == "fp8" and params_in_fp8(c.recipe) else PARAM_BYTES
    return (GRAD_BYTES[c.grad_reduce], gathered), c.stages(t.dtype, pp)


def in_flight(lay: Layout, stage: int) -> float:
    """Micro-batches whose activations pipeline stage ``stage`` holds at its peak (placement.pipeline_in_flight)."""
    return pipeline_in_flight(lay.pp, lay.vpp, stage, lay.micro_batches, ep_warmup(lay))


def lean(m: ModelSpec, t: Target, c: Constraints, deg: tuple) -> list[Layout]:
    """The degree tuple's least memory-hungry layout for each expert split (which of them holds less depends on
    the model: etp = tp splits the weights, etp 1 the gathered tokens); empty if it has none."""
    order = {"full": 0, "selective": 1, "none": 2}
    leanest: dict[int, tuple] = {}  # etp -> (key, layout)
    for x in variants(m, t, c, deg):
        key = (order[x.recompute], -x.zero, x.micro_batch, x.vpp)
        if x.etp not in leanest or key < leanest[x.etp][0]:
            leanest[x.etp] = key, x
    return [x for _, x in leanest.values()]


class Planner:
    """One model on one cluster for one target: times layouts, and checks memory lazily (memoized)."""

    def __init__(self, m: ModelSpec, cluster, t: Target, c: Constraints):
        if c.attention_kernel == "auto" and attention_kernel(cluster.gpu, "auto") == "unfused":  # pre-Ampere
            if (c.cp or 1) > 1:
                raise SpecError(f"{cluster.gpu.name} runs no fused attention kernel (compute capability "
                                f"{cluster.gpu.compute_capability}), and context parallelism needs one: drop --cp")
            c = replace(c, attention_kernel="unfused")
        if (c.cp or 1) > 1 and t.seq % (2 * c.cp):  # as _cp_choices holds the searched degrees to
            raise SpecError(f"--cp {c.cp} must split the {t.seq:,}-token sequence into 2 x {c.cp} equal chunks "
                            "(Megatron-Core's causal load balancing): give a --seq or a --cp that does")
        self.m, self.cluster, self.t, self.c = m, cluster, t, c
        self.links = links_of(cluster, t.dtype, c.attention_kernel, c.expert_overhead, c.tp_overlap_sms)
        check_etp(m, c.etp)
        check_recompute_modules(m, c.recompute_modules, c.ep_overlap)
        if c.grad_reduce == "fp16" and t.dtype != "fp16":
            raise SpecError(f"--grad-reduce fp16 goes with --dtype fp16 (Megatron-LM's fp16 training); {t.dtype} "
                            "training reduces fp32 or bf16 gradients")
        self.fp8 = fp8_settings(cluster.gpu, t, c)
        self.offloads = offloading(m, cluster.gpu, c)  # whether the search may offload activations
        self._plain = replace(c, recompute=("none",)) if self.offloads else c  # its layouts: no recomputation
        self.host_memory = cluster.gpu.host_memory_bytes or math.inf
        check_links(self.links, t.gpus)
        self.cost: ModelCost = model_cost(m, t.seq, c.loss or "full", c.recompute_modules)
        self.usable = cluster.gpu.usable_bytes * c.gpu_util
        self._pieces: dict = {}
        self._splits: dict = {}
        self._micro: dict = {}
        self._per_step: dict = {}
        self.scaled = t.dtype == "fp16"  # fp16 training's loss scale, undone in the optimizer step
        self.evaluated = 0

    def split(self, lay: Layout):
        """The parameters (memory.placement.ParamSplit) of one GPU's largest stage, memoized per (tp, pp, ep, etp)."""
        key = (lay.tp, lay.pp, lay.ep, lay.etp)
        if key not in self._splits:
            from .memory.placement import stage_params, stages

            par = self.parallelism(lay)
            self._splits[key] = max((stage_params(self.m, par, st) for st in stages(self.m, lay.pp)),
                                    key=lambda p: p.total)
        return self._splits[key]

    def grads(self, lay: Layout) -> tuple[float, float]:
        """(dense, routed-expert) parameters of one GPU's largest stage, whose gradients DP reduces."""
        split = self.split(lay)
        return split.total - split.experts, split.experts

    def parallelism(self, lay: Layout) -> Parallelism:
        """The memory model's spec.Parallelism of ``lay`` (an expert split only for an MoE model)."""
        return Parallelism(gpus=self.t.gpus, tp=lay.tp, pp=lay.pp, dp=lay.dp, cp=lay.cp, ep=lay.ep, sp=lay.sp,
                           etp=lay.expert_tp if self.m.is_moe else None)

    def micro(self, lay: Layout) -> MicroBatch:
        """One micro-batch of ``lay`` by its pieces (steptime.MicroBatch)."""
        return micro_batch(self.cost, self.links, lay, self.t.seq)

    def time(self, lay: Layout) -> StepTime:
        """One step of ``lay``. Its micro-batch does not depend on the ZeRO stage (nor on the micro-batch count or
        the layers offloaded): the layouts that differ only there share one, timed once (memoized)."""
        self.evaluated += 1
        key = lay[:_ZERO] + lay[_ZERO + 1:_COUNT] + lay[_COUNT + 1:_OFFLOAD]  # the Layout without those three fields
        mb = self._micro.get(key)
        if mb is None:
            mb = self._micro[key] = micro_batch(self.cost, self.links, lay, self.t.seq)
        offload = offload_exposed(lay, mb, self.m.num_hidden_layers, self.layer_bytes(lay),
                                  self.host_rate(lay, mb)) if lay.offload else 0.0
        return step_time(self.cost, self.links, lay, self.t.seq, None, mb, *self._once(lay), offload)

    def _once(self, lay: Layout) -> tuple:
        """The terms paid once a step, by the stage's parameters: DP's traffic and the optimizer's step (memoized)."""
        key = (lay.tp, lay.pp, lay.dp, lay.cp, lay.ep, lay.etp, lay.zero, lay.grad_bytes, lay.param_bytes)
        if key not in self._per_step:
            self._per_step[key] = self._traffic(lay), optimizer_step(lay, self.links, self.grads(lay), self.scaled)
        return self._per_step[key]

    def host_rate(self, lay: Layout, mb: MicroBatch) -> float:
        """What the host link gives ``lay``'s offloading copies beside its NIC's DP traffic (exposure.host_rate)."""
        return host_rate(lay, self.links, mb.total, self._once(lay)[0])

    def layer_bytes(self, lay: Layout) -> float:
        """Bytes one layer of ``lay`` saves for a micro-batch (what offloading copies), the stage's average: the
        memory model's activations in flight over its layers (one stage, one micro-batch in flight)."""
        (_, pieces), = self._pieces_of(lay._replace(offload=0))
        return pieces.per_flight * lay.micro_batch / self.m.num_hidden_layers

    def _traffic(self, lay: Layout) -> tuple[float, float]:
        """Data parallelism's gradient reduce-scatter and parameter all-gather (exposure.dp_traffic)."""
        dense, experts = self.grads(lay)
        gathered = None
        if lay.param_bytes == 1:  # FP8 parameters: the block linears in 1 byte; embedding, norms, head at 16 bits
            gathered = (dense + self.split(lay).other * (PARAM_BYTES - 1), experts)
        return dp_traffic(lay, self.links, (dense, experts), gathered)

    def memory(self, lay: Layout) -> float:
        """Bytes on the fullest GPU: the first stage (the most micro-batches in flight), a middle one with an
        uneven split's extra layer, or the last (the head and the loss's buffers)."""
        return max(p.total(lay.micro_batch, in_flight(lay, i)) for i, p in self._pieces_of(lay))

    def _pieces_of(self, lay: Layout) -> tuple:
        """(stage, memory.pieces.StagePieces) of each stage that can be the fullest, memoized (not per micro-batch)."""
        key = (lay.tp, lay.pp, lay.cp, lay.ep, lay.etp, lay.dp, lay.zero, lay.recompute, lay.sp, lay.offload)
        if key not in self._pieces:
            self._pieces[key] = self._stage_pieces(lay)
        return self._pieces[key]

    def _stage_pieces(self, lay: Layout) -> tuple:
        from .memory.pieces import stage_pieces
        from .memory.placement import stages
        from .memory.settings import MemorySettings

        # the modules are read under selective recomputation only (and refused beside the others)
        modules = self.c.recompute_modules if lay.recompute == "selective" else DEFAULT_RECOMPUTE_MODULES
        s = MemorySettings(mode="train", seq=self.t.seq, batch=1, zero=lay.zero, recompute=lay.recompute,
                           recompute_modules=modules, framework="megatron",
                           attention_impl="eager" if self.c.attention_kernel == "unfused" else "flash",
                           parallel=self.parallelism(lay), loss=self.c.loss, offload_layers=lay.offload,
                           precision="mixed" if GRAD_BYTES[self.c.grad_reduce] == 2 else None, **self.fp8)
        return tuple((st.index, stage_pieces(self.m, s, st)) for st in stages(self.m, lay.pp))

    def fits(self, lay: Layout) -> bool:
        """On the GPU, and what it offloads within the host memory a GPU has (where the preset gives it)."""
        return self.memory(lay) <= self.usable and (not lay.offload or self.host_bytes(lay) <= self.host_memory)

    def host_bytes(self, lay: Layout) -> float:
        """Bytes of ``lay``'s offloaded activations in host memory per GPU: its first n layers' (one stage)."""
        return lay.offload * self.layer_bytes(lay)

    def fitting(self, deg: tuple) -> list[Layout]:
        """The layouts of one degree tuple (tp, cp, pp, dp, ep) that fit, as they are or offloaded (offloaded())."""
        fit = (lay if self.fits(lay) else self.offloaded(lay) for lay in variants(self.m, self.t, self.c, deg))
        return [lay for lay in fit if lay is not None]

    def offloaded(self, lay: Layout) -> Layout | None:
        """``lay`` with the fewest layers' activations offloaded that make it fit, where the search may offload (one
        stage, no CP, no recomputation, nothing offloaded yet); else None. The memory falls by about a layer's
        activations a layer: from the line through none and all but one offloaded, step to the fewest that fit."""
        last = self.m.num_hidden_layers - 1
        if not self.offloads or lay.pp > 1 or lay.cp > 1 or lay.recompute != "none" or lay.offload or last < 1:
            return None
        none, least = self.memory(lay), self.memory(lay._replace(offload=last))
        if least > self.usable:
            return None
        n = min(last, max(1, math.ceil((none - self.usable) / (none - least) * last))) if none > least else last
        while n > 1 and self.memory(lay._replace(offload=n - 1)) <= self.usable:
            n -= 1
        while self.memory(lay._replace(offload=n)) > self.usable:
            n += 1
        fewest = lay._replace(offload=n)
        return fewest if self.fits(fewest) else None  # more would only fill more host memory

    def possible(self, deg: tuple) -> bool | None:
        """Whether some layout of the degree tuple fits: its leanest variants (lean()), or its leanest without
        recomputation offloaded (a deep model's all but one layer offloaded can need less than full recomputation's
        inputs); None where no layout of it multiplies out."""
        leanest = lean(self.m, self.t, self.c, deg)
        if not leanest:
            return None
        if any(self.fits(lay) for lay in leanest):
            return True
        if not self.offloads or deg[1] > 1 or deg[2] > 1:  # offloading: one stage, no CP
            return False
        return any(self.offloaded(lay) is not None for lay in lean(self.m, self.t, self._plain, deg))

    def search(self, top: int = 5) -> list[Ranked]:
        """The fastest fitting layout of each of the ``top`` fastest degree tuples."""
        timed, possible, order = [], False, itertools.count()
        for deg in degree_tuples(self.m, self.cluster.gpus_per_node, self.t, self.c):
            fits = self.possible(deg)
            possible = possible or fits is not None
            if fits:
                timed += [(t.total, next(order), lay, t) for lay in variants(self.m, self.t, self.c, deg)
                          for t in [self.time(lay)]]
        heapq.heapify(timed)  # fastest first; ties in the order enumerated
        best: dict[tuple, Ranked] = {}
        while timed and len(best) < top:
            _, _, lay, t = heapq.heappop(timed)
            deg = (lay.tp, lay.cp, lay.pp, lay.dp, lay.ep)
            if deg in best:
                continue
            if not self.fits(lay):  # a layout that does not fit may with some layers' activations offloaded: slower
                alt = self.offloaded(lay)
                if alt is not None:
                    t = self.time(alt)
                    heapq.heappush(timed, (t.total, next(order), alt, t))
                continue
            best[deg] = Ranked(lay, t, self.memory(lay), self.usable, lay.offload and self.host_bytes(lay))
        if not possible:
            raise SpecError(impossible(self.m, self.t, self.c) + nearest_counts(self.m, self.cluster.gpus_per_node,
                                                                               self.t, self.c))
        return list(best.values())


def nearest_counts(m: ModelSpec, node: int, t: Target, c: Constraints, reach: int = 256) -> str:
    """The GPU counts nearest t.gpus, below and above within ``reach``, at which some layout multiplies out (a degree
    tuple with a variant), as " (992 or 1,024 GPUs would)"; "" where none does."""
    def works(n: int) -> bool:
        at = replace(t, gpus=n)
        return any(lean(m, at, c, deg) for deg in degree_tuples(m, node, at, c))

    below = next((n for n in range(t.gpus - 1, max(0, t.gpus - reach), -1) if works(n)), None)
    above = next((n for n in range(t.gpus + 1, min(MAX_GPUS, t.gpus + reach) + 1) if works(n)), None)
    found = [f"{n:,}" for n in (below, above) if n]
    return f" ({' or '.join(found)} GPUs would)" if found else ""


from . import _make_callable  # noqa: E402 - llmcalc.plan(...) is the API function (llmcalc/__init__.py)

_make_callable(__name__)
