"""`plan`'s answer: the hardware and batch a user names, resolved; the ranked layouts as a Breakdown (the
best one's step time by part, each with its formula) and the JSON contract's `layouts` records."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

from .collectives import ep_overlapped, ep_unpaired
from .flops import palm_per_token
from .gpuspec import STAND_INS
from .kernels import UNFUSED_BYTES, UNFUSED_DROPOUT_BYTES, attention_figure
from .memory.placement import uneven_split
from .fewest import gpus_within, smallest_fit
from .plan import Constraints, Planner, Ranked, Target
from .spec import ModelSpec, SpecError
from .exposure import BUFFER_PASSES, offload_windows, optimizer_bytes, optimizer_counts, overlaps_sends
from .serving import FLOAT_BANDWIDTH, mamf_share
from .steptime import Layout, moe_redone
from .units import fmt_seconds

# Llama 2 and Llama 3 pre-trained at 4M tokens per step (their papers' Table 1 / §3.4.1)
DEFAULT_BATCH_TOKENS = 4 * 2**20
TRAINING_DTYPES = ("bf16", "fp16", "fp8")  # what plan's --dtype offers (cli/plan.py)


def global_batch(sequences: int | None, tokens: float | None, seq: int) -> int:
    """Sequences per step: as given, from a token count (a whole number of sequences; else the error names the
    nearest whole batches), or the largest power of two of sequences within 4M tokens: a batch whose only
    factors are twos lets data parallelism take any power of two GPUs (682 sequences of 6k, 2 x 11 x 31, would cap
    DP at 2 on 64 GPUs; 512 does not)."""
    if sequences is not None and tokens is not None:
        raise SpecError("give --global-batch (sequences) or --batch-tokens, not both")
    if sequences is not None:
        return sequences
    if tokens is None:
        return 1 << max(0, (DEFAULT_BATCH_TOKENS // seq).bit_length() - 1)
    if tokens < seq or tokens % seq:
        whole = [n for n in (int(tokens // seq), int(tokens // seq) + 1) if n]
        near = " or ".join(f"{n * seq:,} ({n:,} sequence{'s' * (n > 1)})" for n in whole)
        raise SpecError(f"--batch-tokens {tokens:,.0f} is not a whole number of {seq:,}-token sequences: "
                        f"give {near}")
    return int(tokens // seq)


def conventions(links, dtype: str, c: Constraints, gpu, moe: bool = False, dropout: bool = False,
                offloaded: bool = False) -> str:
    """The step-time model's conventions as this plan applies them (README "How the step time is estimated");
    ``offloaded``: some layout listed offloads activations."""
    tp = f"TP collectives {tp_text(c, moe)}"
    dp = "DP's hidden behind compute where it can be" if c.dp_overlap else "ZeRO 0-2's DP exposed (ZeRO-3's prefetched)"
    if c.backward_prefetch == "post" and c.zero3(dtype):
        dp = (("ZeRO 0-2's DP hidden behind compute where it can be" if c.dp_overlap else "ZeRO 0-2's DP exposed")
              + ", ZeRO-3's backward all-gathers exposed (BACKWARD_POST)")
    pp = "interleaved PP sends under the next chunk" if c.pp_overlap else "PP sends exposed"
    ep = "EP's beyond the paired micro-batch's compute" if c.ep_overlap else "EP's exposed"
    experts = (f"{fmt_seconds(links.expert_overhead)} of fixed work per routed expert a GPU holds, per MoE layer and "
               "micro-batch, " if moe else "")
    core = core_text(links, gpu, c.attention_kernel, dropout)
    offload = ""
    if offloaded:
        which = f"{c.offload} layers" if c.offload else "the fewest layers a layout fits with"
        offload = (f"; activation offloading of {which} (one stage, no recomputation), each layer's copy at "
                   f"{links.host / 1e9:g} GB/s, less what the NIC's DP traffic takes of the link, under its window of "
                   "about L/n layers' compute")
    return (f"step time (llmcalc/steptime.py): GEMMs at {links.efficiency:.0%} of the {dtype} peak or their weights' "
            f"traffic at HBM speed where longer, {core}, memory-bound kernels at HBM speed; {tp}, {ep} (across nodes "
            f"at one NIC a GPU), {experts}CP's bytes hidden behind attention, {dp}, {pp}; bubble (p-1)/v "
            f"micro-batches; the Adam step over the GPU's share of the fp32 states at HBM speed{offload}; memory: "
            "Megatron-Core's states, the first stage's micro-batches in flight")


def tp_text(c: Constraints, moe: bool = False) -> str:
    """How the plan exposes the TP collectives (tpcomm.py); ``moe``: the model has MoE layers, whose dispatcher
    gathers and scatters over TP without EP."""
    dispatcher = "; without EP, an MoE layer's dispatcher gather and scatter exposed" if moe else ""
    if c.tp_overlap:
        return (f"30% exposed (overlapped, the GEMMs under them short of userbuffers' {c.tp_overlap_sms} SMs)"
                + dispatcher)
    without = ("the input gradient's all-reduce under the weight gradient's GEMM" if c.tp_async
               else "all exposed (--no-tp-async)")
    return ("exposed forward; backward, with SP the output gradient's all-gather exposed and the rest under the "
            f"column-parallel GEMMs, without SP {without}" + dispatcher)


def core_text(links, gpu, kernel: str, dropout: bool = False) -> str:
    """How the plan times the attention core: its kernel at a share of the 16-bit peak, or unfused by its bytes
    (with attention dropout's where the model has dropout)."""
    if links.unfused:
        moved = UNFUSED_BYTES + UNFUSED_DROPOUT_BYTES * dropout
        return (f"the attention core unfused (the whole s x s square's GEMMs at {links.efficiency16:.0%} of the "
                f"16-bit peak, {moved} bytes a score through HBM{' with attention dropout' if dropout else ''})")
    return f"the attention core ({kernel_text(gpu, kernel)}) at {links.attention:.0%} of the 16-bit peak"


def kernel_text(gpu, kernel: str) -> str:
    """The attention kernel a plan times, and whose figure it uses where the GPU preset has none for it."""
    name, share, source = attention_figure(gpu, kernel)
    if source == name:
        return name
    if source == "fa2":
        return f"{name}, timed as fa2: no {name} figure for {gpu.name}"
    matmul = "its best-shape matmul share" if mamf_share("bf16", gpu) else "the matmul share assumed without a figure"
    return (f"{name}, at {share:g} of the peak: no attention figure for {gpu.name}, so A100's FlashAttention-2 share "
            f"scaled to {matmul}")


# The step-time rows: (row, steptime.StepTime field, note)
STEP_ROWS = (("compute", "compute", "GEMMs, attention, memory-bound kernels, the LM head and loss, forward + backward"),
             ("recompute", "recompute", "the forward work recomputation repeats"),
             ("offload", "offload", "activation offloading's copies to host memory and back, beyond the layers' "
                                    "compute they run under"),
             ("tp_comm", "tp", "tensor-parallel all-reduces (reduce-scatter + all-gather with SP), {}"),
             ("cp_comm", "cp", "context-parallel K/V ring, beyond what the attention core hides"),
             ("ep_comm", "ep", "MoE token traffic: the all-to-all's dispatch and combine, the experts' etp "
                               "gathers, beyond what --ep-overlap hides"),
             ("expert_overhead", "experts", "MoE layers' fixed work per routed expert a GPU holds, exposed"),
             ("pp_comm", "pp", "pipeline sends and receives between stages, beyond what an interleaved chunk hides"),
             ("bubble", "bubble", "pipeline fill and drain: (p-1)/v micro-batches"),
             ("dp_comm", "dp", "data-parallel gradient reduction and ZeRO gathers, beyond what compute hides"),
             ("optimizer", "optimizer", "the Adam step over this GPU's share of the fp32 weights and states, "
                                        "memory-bound"))


LAYOUT_UNITS = {"step_time": "s", "tokens_per_s": "token/s", "mfu": "ratio", "memory": "byte", "headroom": "byte",
                "train_time": "s", "host_memory": "byte"}


def _offload_formula(mb, lay: Layout, layers: int, layer_bytes: float, rate: float) -> tuple:
    """The offload row's formula: each offloaded layer's copy out and back against its window's forward and backward,
    the windows (exposure.offload_windows) grouped by their length."""
    counts = Counter(offload_windows(layers, lay.offload))
    # a layer's forward in whole nanoseconds, its bytes and the rate whole: the differences lose no digits
    term = ("{} windows x (max(0, {} B / {} B/s - {} layers x {} ns x 1e-9) + max(0, {} B / {} B/s - 2 x {} layers x "
            "{} ns x 1e-9))")
    forward, rate, layer_bytes = round(mb.layers_forward / layers * 1e9), round(rate), round(layer_bytes)
    return ("{} micro-batches x (" + " + ".join([term] * len(counts)) + ")", lay.micro_batches,
            *(x for w, n in counts.items() for x in (n, layer_bytes, rate, w, forward, layer_bytes, rate, w, forward)))


def step_formulas(mb, lay: Layout, experts: int = 0, overhead: float = 0.0, redone: bool = False,
                  grads: tuple[float, float] = (0.0, 0.0), hbm: float = 0.0, scaled: bool = False,
                  offload: tuple[int, float, float] | None = None) -> dict[str, tuple]:
    """Each step-time row as its formula over one micro-batch's pieces (steptime.MicroBatch, seconds); ``experts``
    routed experts a GPU holds, at ``overhead`` seconds each; ``redone``: recomputation repeats the MoE layers'
    forward (steptime.moe_redone); ``grads``: the (dense, routed-expert) parameters the GPU's stage holds, whose
    optimizer states it steps at ``hbm`` bytes a second (exposure.optimizer_step; ``scaled``: fp16's loss scale);
    ``offload``: where ``lay`` offloads, (the rank's layers, bytes a layer saves for a micro-batch, bytes a second to
    host memory; exposure.offload_exposed)."""
    stepped, buffer = optimizer_counts(lay, grads)
    m = lay.micro_batches
    each = ("{} micro-batches x {} s",)
    return {"compute": ("{} micro-batches x 3 x ({} s GEMMs + {} s attention + {} s memory-bound + {} s LM head and "
                        "loss)", m,
                        mb.gemm, mb.attention, mb.elementwise, mb.head),
            "recompute": each + (m, mb.redo), "tp_comm": each + (m, mb.tp), "cp_comm": each + (m, mb.cp),
            "offload": _offload_formula(mb, lay, *offload) if offload else ("no layers offloaded",),
            "ep_comm": ("{} micro-batches x {} s + {} unpaired x ({} s - {} s)", m, mb.ep, ep_unpaired(lay), mb.ep_alone,
                        mb.ep) if ep_unpaired(lay) else each + (m, mb.ep),
            "expert_overhead": ("{} micro-batches x {} MoE layers x {} experts a GPU x {} s" + (
                " x 4/3 (recomputation repeats the forward)" if redone else ""),
                m, mb.moe_layers, experts, overhead),
            "pp_comm": ("{} micro-batches x {} virtual stages x 2 sends x max(0, {} s - ({} s + {} s + {} s) / {})", m,
                        lay.vpp, mb.send, mb.gemm_forward, mb.core_forward, mb.elementwise, lay.vpp)
                       if overlaps_sends(lay) else
                       ("{} micro-batches x {} virtual stages x 2 sends x {} s", m, lay.vpp, mb.send),
            "bubble": ("({} - 1) / {} x {} s per micro-batch", lay.pp, lay.vpp, mb.total),
            "optimizer": ("({} parameters stepped x {} B + {} gradients x {} passes x {} B) / {} B/s", round(stepped),
                          optimizer_bytes(lay, scaled), round(buffer), BUFFER_PASSES, lay.grad_bytes, hbm),
            "dp_comm": (f"by ZeRO-{lay.zero}'s overlap with the backward and forward"
                        + (", the backward's all-gathers exposed (BACKWARD_POST)"
                           if lay.zero >= 3 and lay.backward_prefetch == "post" else "")
                        + " (llmcalc/exposure.py dp_exposed)"
                        if lay.dp_overlap or lay.zero >= 3 else f"by ZeRO-{lay.zero}'s reduction after the backward "
                        "and gather before the forward, all exposed (llmcalc/exposure.py dp_exposed)",)}


def layout_columns(moe: bool, tokens: bool) -> tuple[str, ...]:
    """A `layouts` entry's keys in order: the columns a narrow terminal keeps come first (report._fitting), the layout
    in words, then the answers; train_time with --tokens, etp for an MoE model."""
    return ("layout", "step_time", "mfu", *(("train_time",) if tokens else ()), "memory", "headroom", "tokens_per_s",
            "tp", "pp", "vpp", "cp", "ep", *(("etp",) if moe else ()), "dp", "zero", "recompute", "sp", "micro_batch",
            "grad_accum", "offload", "host_memory")


def record(r: Ranked, m: ModelSpec, t: Target, peak: float) -> dict:
    """One layout as the JSON contract's `layouts` entry."""
    lay, step = r.layout, r.time.total
    tokens = t.global_batch * t.seq
    out = {"layout": describe(lay), "step_time": step,
           "mfu": palm_per_token(m, t.seq) * tokens / (step * t.gpus * peak),  # PaLM's 6N + 12LHQT, as `mfu`
           # whole optimizer steps: a budget that ends mid-step runs that step out
           "train_time": math.ceil(t.tokens / tokens) * step if t.tokens else None,
           "memory": round(r.memory), "headroom": round(r.usable - r.memory), "tokens_per_s": tokens / step,
           "tp": lay.tp, "pp": lay.pp, "vpp": lay.vpp, "cp": lay.cp, "ep": lay.ep, "etp": lay.expert_tp, "dp": lay.dp,
           "zero": lay.zero, "recompute": lay.recompute, "sp": lay.sp, "micro_batch": lay.micro_batch,
           "grad_accum": lay.micro_batches, "offload": lay.offload, "host_memory": round(r.host)}
    return {key: out[key] for key in layout_columns(m.is_moe, bool(t.tokens))}


def describe(lay: Layout) -> str:
    """A layout in a few words: "tp8 pp4 vpp3 dp16 zero1 mb1 full-recompute" (ep, cp, vpp shown past 1; etp where
    it is not TP's; offload40 where 40 layers' activations are offloaded)."""
    parts = [f"tp{lay.tp}", f"pp{lay.pp}"] + [f"{k}{v}" for k, v in (("vpp", lay.vpp), ("cp", lay.cp), ("ep", lay.ep))
                                             if v > 1] + ([f"etp{lay.expert_tp}"] if lay.expert_tp != lay.tp else [])
    parts += [f"dp{lay.dp}", f"zero{lay.zero}", f"mb{lay.micro_batch}"]
    parts += [f"offload{lay.offload}"] if lay.offload else []
    return " ".join(parts + ([f"{lay.recompute}-recompute"] if lay.recompute != "none" else []))


def _step_rows(rows, p: Planner, m: ModelSpec, c: Constraints, best: Ranked) -> list[str]:
    """Add the best layout's step time by part, each with its formula; return the rows' names."""
    lay, mb = best.layout, p.micro(best.layout)
    hows = step_formulas(mb, lay, m.num_experts // lay.ep if m.is_moe else 0, c.expert_overhead,
                         moe_redone(p.cost, lay), p.grads(lay), p.links.hbm * FLOAT_BANDWIDTH, p.scaled,
                         (m.num_hidden_layers, p.layer_bytes(lay), p.host_rate(lay, mb)) if lay.offload else None)
    shown = [row for row in STEP_ROWS if (m.is_moe or row[0] != "expert_overhead")  # dense: no experts to cost
             and (lay.offload or row[0] != "offload")]  # nothing offloaded: no copies
    for name, part, note in shown:
        rows.add(name, getattr(best.time, part), note.format(tp_text(c, m.is_moe)), how=hows[name])
    return [name for name, _, _ in shown]


def _check_dtype(gpu, dtype: str) -> None:
    """A training dtype the GPU has a peak for, else the ones of TRAINING_DTYPES it has."""
    if dtype not in gpu.peak_flops and STAND_INS.get(dtype) not in gpu.peak_flops:
        have = [d for d in TRAINING_DTYPES if d in gpu.peak_flops]
        raise SpecError(f"{gpu.name} has no published {dtype} peak (no {dtype} tensor cores): --dtype "
                        f"{' or '.join(have) or 'bf16, on another GPU'}")


def _deadline(summary: dict, notes: list, m: ModelSpec, cluster, t: Target, c: Constraints, seconds: float,
              reference: tuple[float, float] | None = None) -> None:
    """--max-days missed: the fewest GPUs that meet it (gpus_within), in the summary and a note; ``reference``: the
    time to train and MFU at t.gpus (None: the summary's)."""
    from .breakdown import Quantity

    days = f"{seconds / 86400:g} days"
    trained, asked = reference or (summary["train_time"].value, summary["mfu"].value)
    gpus, time, at, cheaper = gpus_within(m, cluster, t, c, seconds)
    summary["gpus_within"] = gpus or None
    nodes = f" ({gpus // cluster.gpus_per_node:,} nodes of {cluster.gpus_per_node})" if gpus % cluster.gpus_per_node == 0 \
        and gpus > cluster.gpus_per_node else ""
    # the same work a step at that count: MFU scales as GPU-seconds a step, the asked count's over that one's
    mfu = asked * trained * t.gpus / (time * at) if time < math.inf else 0.0
    idle = (f"; the {t.global_batch:,}-sequence batch leaves that many GPUs idle much of a step (--global-batch or "
            "--batch-tokens larger lets data parallelism grow)" if mfu < asked / 2 else "")
    if gpus:
        summary["train_time_within"] = Quantity(time, "s")
        notes.append(f"within {days}: {gpus:,} GPUs{nodes}, {fmt_seconds(time)} on their fastest layout at {mfu:.1%} "
                     f"MFU (the same search at each count, the nodes doubled then bisected){idle}"
                     + (f"; {cheaper[0]:,} GPUs train in {fmt_seconds(cheaper[1])} on "
                        f"{1 - cheaper[0] * cheaper[1] / (gpus * time):.0%} fewer GPU-hours (the batch splits evenly "
                        "over them)" if cheaper else ""))
    else:
        notes.append(f"within {days}: no GPU count with this {t.global_batch:,}-sequence batch; {at:,} GPUs train in "
                     f"{fmt_seconds(time)} at {mfu:.1%} MFU, past which more GPUs cut under a tenth a doubling{idle}"
                     if time < math.inf else f"within {days}: no GPU count fits")


def _nothing_fits(summary: dict, notes: list, m: ModelSpec, cluster, t: Target, c: Constraints, usable: float,
                  deadline: float | None) -> None:
    """No layout fits: the fewest GPUs any does (_too_small); with --max-days, the deadline asked from that count."""
    from .breakdown import Quantity

    fewest = summary["min_gpus"] = _too_small(notes, m, cluster, t, c, usable)
    at, c = dataclasses.replace(t, gpus=fewest or 1), dataclasses.replace(c, dp=None)  # DP follows the count
    ranked = Planner(m, cluster, at, c).search(1) if fewest and t.tokens and deadline else []
    if not ranked:
        return
    time = math.ceil(t.tokens / (t.global_batch * t.seq)) * ranked[0].time.total
    mfu = record(ranked[0], m, at, cluster.gpu.peak(t.dtype))["mfu"]
    if time > deadline:
        _deadline(summary, notes, m, cluster, at, c, deadline, (time, mfu))
        return
    summary["gpus_within"], summary["train_time_within"] = fewest, Quantity(time, "s")
    notes.append(f"within {deadline / 86400:g} days: the fewest GPUs that fit, {fewest:,}, train in {fmt_seconds(time)} "
                 f"at {mfu:.1%} MFU")


def _too_small(notes: list, m: ModelSpec, cluster, t: Target, c: Constraints, usable: float) -> int | None:
    """No layout fits: the fewest GPUs any does (smallest_fit), noted with the options that narrowed the search."""
    from .planinputs import fixed_flags
    from .units import fmt_bytes

    fewest = smallest_fit(m, cluster, t, c)
    node = cluster.gpus_per_node
    fixed = fixed_flags(dataclasses.replace(c, dp=None))  # smallest_fit lets DP follow each count it tries
    narrowed = f" with {', '.join(fixed)}" if fixed else ""
    notes.append(f"no layout fits {t.gpus:,} x {cluster.gpu.name} ({fmt_bytes(usable)} usable each)"
                 + (f"; the fewest GPUs any layout fits on{narrowed}: {fewest:,}"
                    + (f" (whole nodes of {node})" if fewest > node else "")
                    + (f", DP as the count leaves it, not --dp {c.dp}" if c.dp else "") if fewest else
                    f"; none fits on any count{narrowed}" + (" (drop or widen one)" if fixed else "")))
    return fewest


def _thin(t: Target, best: Ranked) -> list[str]:
    """The batch too small for the cluster: the best layout's pipeline runs fewer micro-batches than stages, so
    (p-1)/v of the (m + (p-1)/v) micro-batch times a step takes are fill and drain."""
    lay = best.layout
    if lay.pp == 1 or lay.micro_batches >= lay.pp:
        return []
    share = best.time.bubble / best.time.total
    ranks = f"each of the {lay.dp:,} DP ranks" if lay.dp > 1 else "its one DP rank"
    return [f"the {t.global_batch:,}-sequence batch leaves {ranks} {lay.micro_batches} "
            f"micro-batch{'es' * (lay.micro_batches != 1)} for {lay.pp} pipeline stages: the bubble is {share:.0%} of "
            "the step; fewer GPUs or a larger batch (--global-batch, --batch-tokens) would use them better"]


def _no_ep_overlap(m: ModelSpec, c: Constraints, lay: Layout) -> list[str]:
    """--ep-overlap asked where the best layout cannot run it (collectives.ep_overlapped)."""
    if not (m.is_moe and c.ep_overlap) or ep_overlapped(lay):
        return []
    return [f"--ep-overlap does not apply to {describe(lay)}: Megatron-Core overlaps the all-to-all only without full "
            "recomputation and, on a pipeline, interleaved; it is timed exposed"]


def plan_breakdown(m: ModelSpec, cluster, t: Target, c: Constraints, top: int = 5, deadline: float | None = None):
    """Rows: the best layout's step time by part; summary: the ranked layouts (the JSON contract). ``deadline``
    (seconds, with t.tokens): where the fastest layout misses it, the fewest GPUs that meet it (gpus_within)."""
    from .breakdown import Breakdown, Quantity, Rows

    if top < 1:
        raise SpecError("--top must be at least 1")
    _check_dtype(cluster.gpu, t.dtype)
    p = Planner(m, cluster, t, c)
    ranked = p.search(top)
    peak = cluster.gpu.peak(t.dtype)
    layouts = [record(r, m, t, peak) for r in ranked]
    rows = Rows("s", total="step_time")
    notes = [f"{t.gpus:,} x {cluster.gpu.name}, {cluster.gpus_per_node} per node; {t.global_batch:,} sequence{'s' * (t.global_batch != 1)} "
             f"of {t.seq:,} token{'s' * (t.seq != 1)} per step; {t.dtype}" + (f"; {p.evaluated:,} layouts timed" if ranked else "")]
    if ranked:
        offloaded = any(r.layout.offload for r in ranked)
        notes.append(conventions(p.links, t.dtype, c, cluster.gpu, m.is_moe, m.dropout > 0, offloaded))
        if t.dtype == "fp8":  # NVIDIA's tables and the published FP8 runs divide by the BF16 peak
            notes.append(f"MFU over the {t.dtype} dense peak ({peak / 1e12:,.0f} TFLOP/s); over the BF16 peak, as "
                         f"published FP8 runs state it, it is {peak / cluster.gpu.peak('bf16'):.3g} x as large")
    summary: dict = {"layouts": layouts, "found": bool(ranked), "evaluated": p.evaluated}
    if ranked:
        best = ranked[0]
        summary["layout"] = describe(best.layout)
        notes += (uneven_split(m.num_hidden_layers, best.layout.pp, best.layout.vpp, "timed")
                  + _no_ep_overlap(m, c, best.layout) + _thin(t, best))
        shown = _step_rows(rows, p, m, c, best)
        rows.sum("step_time", shown, "per optimizer step, the busiest GPU", total=None)
        summary.update({k: Quantity(layouts[0][k], u) for k, u in (("step_time", "s"), ("tokens_per_s", "token/s"),
                                                                   ("mfu", "ratio"), ("memory", "byte"))})
        if t.tokens:
            summary["train_time"] = Quantity(layouts[0]["train_time"], "s")
        if t.tokens and deadline and layouts[0]["train_time"] > deadline:
            _deadline(summary, notes, m, cluster, t, c, deadline)
    else:
        _nothing_fits(summary, notes, m, cluster, t, c, p.usable, deadline)
    return Breakdown(command="plan", title=f"Training plan for {m.name} on {t.gpus:,} x {cluster.gpu.name}",
                     model=m.name, gpu=cluster.gpu.name, rows=rows.build(), summary=summary,
                     inputs={"gpu": cluster.gpu.name, "cluster": cluster.preset, "gpus": t.gpus, "gpus_per_node": cluster.gpus_per_node,
                             "intra_bandwidth": Quantity(cluster.intra_bandwidth, "byte/s"),
                             "inter_bandwidth": Quantity(cluster.inter_bandwidth, "byte/s"), "seq": t.seq,
                             "global_batch": t.global_batch, "tokens": t.tokens, "dtype": t.dtype,
                             **{f.name: getattr(c, f.name) for f in dataclasses.fields(c)},
                             "offload": "auto" if c.offload is None and p.offloads else c.offload or None,
                             "expert_overhead": Quantity(c.expert_overhead, "s") if m.is_moe else None,
                             "tp_overlap_sms": c.tp_overlap_sms if c.tp_overlap else None,
                             "recompute_modules": list(c.recompute_modules) if "selective" in c.recompute else None},
                     notes=tuple(notes))
