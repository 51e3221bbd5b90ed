"""Training memory per GPU at the peak of a step: the start of the backward pass, when every saved
activation and the loss's buffers are alive at once.

Model states (states.py) split over TP x PP (experts also over EP) and sharded over the DP x CP
ranks by ZeRO; activations saved for backward (saved.py, from activations.py) x micro-batch,
divided by TP (heads, MLP width), SP (the hidden-width tensors) and CP (tokens), x the micro-batches
in flight on the first pipeline stage under 1F1B (Korthikanti et al. 2022); the loss's logits
buffers; a reserve.
"""

from __future__ import annotations

from typing import NamedTuple

from ..breakdown import Quantity, Row, Rows
from ..params import OPTIMIZERS, largest_block_matrix
from ..dtypes import DTYPE_BYTES
from ..spec import ModelSpec
from ..units import fmt_bytes
from .loss import LossBuffers, loss_buffers
from .memo import ignoring
from .peak import beside_the_loss, mark_phase, peak_note
from .placement import ParamSplit, Stage, layer_params, lora_params, stage_params, trainable, uneven_split
from .saved import Plan, activation_note, add_activations, in_flight, plan
from .precision import PRECISIONS
from .settings import MemorySettings
from .stepbuffers import copy_note, step_buffer_note, step_buffers, step_how
from .stage import StageMemory, add_reserve, stage_note, whole_bytes
from .states import States, adapter_states, full_states, precision_note, state_note

# -- model states -----------------------------------------------------------------------------------

def model_states(m: ModelSpec, s: MemorySettings, st: Stage, p: ParamSplit) -> States:
    par = s.parallel
    targets = trainable(m, s.finetune, s.lora_targets)
    if targets is None:
        return full_states(p, s, par.replicas, par.expert_replicas)
    head = -(-m.vocab_size // par.tp) * m.hidden_size if st.last and not m.tie_word_embeddings else 0
    return adapter_states(p, s, (par.replicas, par.expert_replicas), lora_params(m, par, st, targets, s.lora_rank),
                          targets, head)


def _gathered(m: ModelSpec, s: MemorySettings, full: bool) -> tuple[float, tuple]:
    """FSDP/ZeRO-3 all-gather the layer being computed and prefetch the next: two full layers. Returns (the
    bytes of one, how they are counted): the largest layer's parameters at 16 bits, or FP8 parameters' block
    linears at their FP8 copy's bytes (memory/fp8.py) and the norms and router at 16 bits; 0 without ZeRO-3
    over replicas."""
    if s.zero < 3 or s.parallel.replicas == 1:
        return 0.0, ("0",)
    split = max((layer_params(m, s.parallel, moe) for moe in ((False, True) if m.is_moe else (False,))),
                key=lambda x: x.total)
    compute = DTYPE_BYTES[s.compute_dtype]  # FSDP gathers fp32 shards in its bf16 param_dtype
    sixteen = min(PRECISIONS[s.precision].weights, compute) if full else compute
    if not _fp8_sharded(s):
        return split.total * sixteen, ("2 layers x {} params x {} B", split.total, sixteen)
    from .fp8 import weight_copy

    per = weight_copy(s.fp8, s.fp8_transposes)
    return split.quantizable * per + split.other * sixteen, (
        "2 layers x ({} block-linear params x {} B + {} params x {} B)", split.quantizable, per, split.other, sixteen)


def _fp8_sharded(s: MemorySettings) -> bool:
    """FP8 parameters sharded by Megatron FSDP (ZeRO-3; memory/fp8.py), over one replica too: no transposes kept."""
    from .fp8 import params_in_fp8

    return bool(s.fp8 and s.fp8_params and params_in_fp8(s.fp8) and s.zero >= 3)


def add_weights(r: Rows, m: ModelSpec, s: MemorySettings, states: States, p: ParamSplit, cpu: dict) -> float:
    """The weights rows; returns the bytes of weights resident on the GPU outside the gathered layers."""
    nd = s.parallel.replicas
    full = not states.weight_rows
    layer, gathered_how = _gathered(m, s, full)
    gathered = 2 * layer
    main, subs, note = states.weights, dict(states.weight_rows), states.weight_note
    fp8 = _fp8_weights(s, p)
    replaced = bool(fp8 and fp8[2])
    if fp8:  # Transformer Engine's FP8 copies of the block linears (memory/fp8.py), or FP8 parameters
        sixteen = main - (_block_shard(s, p) * PRECISIONS[s.precision].weights if replaced else 0.0)
        subs = {"weights/16bit": sixteen, "weights/fp8": fp8[0]}
        main = sixteen + fp8[0]
        note = f"16-bit embeddings, norms and head + FP8 ({s.fp8}) block weights" if replaced else \
            f"{note} + FP8 ({s.fp8}) copies of the block linears"
    if "params" in s.offload:  # ZeRO-Infinity: the parameter shard lives in CPU memory
        cpu["cpu/weights"], main = main, 0.0
        subs, note = {"weights/gathered": gathered}, "offloaded to CPU; gathered layers only"
    elif gathered:
        subs = (subs or {"weights/shard": main}) | {"weights/gathered": gathered}
        note = "ZeRO-3 shard + gathered layers"
    notes = {"weights/frozen": "frozen base" + (f" / {nd} (ZeRO-3)" if s.zero >= 3 else ""),
             "weights/adapters": f"{PRECISIONS[s.precision].weights:g} B/param",
             "weights/shard": f"{PRECISIONS[s.precision].weights:g} B/param / {nd} (ZeRO-3)",
             "weights/gathered": "ZeRO-3: current + prefetched layer, all-gathered",
             "weights/16bit": "16-bit " + ("embeddings, norms and head" if replaced else "weights" + (
                 " (MXFP8 parameters are gathered through them)" if s.fp8_params else ""))
                 + _sharded_note(s, p._replace(experts=0) if replaced else p, full, 3),
             "weights/fp8": fp8 and fp8[1]}
    hows = {**states.hows, "weights/shard": states.hows.get("weights"),
            "weights/16bit": _sixteen_how(s, p) if replaced else states.hows.get("weights"),
            "weights/fp8": fp8 and _fp8_how(s, p, fp8[0]),
            "weights/gathered": gathered_how}
    for key, value in subs.items():
        r.add(key, whole_bytes(value), notes[key], how=hows[key])
    r.add("weights", whole_bytes(main + gathered), note,
          how=(" + ".join(subs),) if subs else states.hows.get("weights", ()))
    return main


def _fp8_weights(s: MemorySettings, p: ParamSplit) -> tuple[float, str, bool] | None:
    """Bytes of the block linears' FP8 copies on this GPU (unsharded: TE casts each whole weight), their note, and
    whether FP8 parameters replace the 16-bit block weights."""
    if not s.fp8 or not p.quantizable:
        return None
    from .fp8 import params_in_fp8, weight_copy

    per = weight_copy(s.fp8, s.fp8_transposes)
    replaced = s.fp8_params and params_in_fp8(s.fp8)
    if _fp8_sharded(s):  # Megatron FSDP: this GPU's 1-byte shard; the transposes are made for a gathered layer
        nd, nd_e = s.parallel.replicas, s.parallel.expert_replicas
        return _block_shard(s, p), f"FP8 parameters: 1 B per block-linear weight / {nd} (ZeRO-3)" + (
            f", experts / {nd_e}" if p.experts and nd_e != nd else ""), True
    what = "FP8 parameters" if replaced else "FP8 copies cached across micro-batches"
    layout = "MXFP8, both directions with scales" if s.fp8 == "mxfp8" else \
        "with their transposes (TN-only FP8 GEMMs)" if per == 2 else "no transposes"
    return p.quantizable * per, f"{what}: {per:g} B per block-linear weight, {layout}", replaced


def _sixteen_how(s: MemorySettings, p: ParamSplit) -> tuple:
    """How the 16-bit rest beside FP8 parameters is counted: whole, or Megatron FSDP's shard of it."""
    w16 = PRECISIONS[s.precision].weights
    if _fp8_sharded(s):
        return "{} params x {} B / {}", p.other, w16, s.parallel.replicas
    return "({} params - {} block-linear params) x {} B", p.total, p.quantizable, w16


def _fp8_how(s: MemorySettings, p: ParamSplit, nbytes: float) -> tuple:
    """How the FP8 weights are counted: every block linear's copies, or Megatron FSDP's 1-byte shard."""
    if not _fp8_sharded(s):
        return "{} block-linear params x {} B", p.quantizable, nbytes / p.quantizable
    if p.experts:
        return "({} / {} + {} / {}) block-linear params x 1 B", p.linear, s.parallel.replicas, p.experts, \
            s.parallel.expert_replicas
    return "{} block-linear params / {} x 1 B", p.linear, s.parallel.replicas


def _block_shard(s: MemorySettings, p: ParamSplit) -> float:
    """The block linears (and experts) this GPU holds: all of them, or under Megatron FSDP's sharded FP8
    parameters its ZeRO-3 shard (the dense ones over the replicas, the experts over theirs)."""
    if not _fp8_sharded(s):
        return p.quantizable
    return p.linear / s.parallel.replicas + p.experts / s.parallel.expert_replicas


def _sharded_note(s: MemorySettings, p: ParamSplit, full: bool, from_stage: int) -> str:
    nd, nd_e = s.parallel.replicas, s.parallel.expert_replicas
    experts = f", experts / {nd_e}" if p.experts and full and nd_e != nd else ""
    return f" / {nd} (ZeRO-{s.zero}){experts}" if s.zero >= from_stage else ""


def add_gradients(r: Rows, s: MemorySettings, states: States, p: ParamSplit, cpu: dict) -> float:
    g = states.gradients
    if "optimizer" in s.offload and s.zero >= 2:  # ZeRO-Offload: the reduced gradient partition goes to CPU, as the
        # fp32 master partition's .grad, an fp32 pinned host tensor (DeepSpeed stage_1_and_2 initialize_optimizer_states)
        cpu["cpu/gradients"] = g * 4 / PRECISIONS[s.precision].grads
        r.add("gradients", 0, "offloaded to CPU with the optimizer (ZeRO-Offload)", how=("0",))
        return 0.0
    r.add("gradients", whole_bytes(g), f"{PRECISIONS[s.precision].grads:g} B/param"
          + _sharded_note(s, p, not states.weight_rows, 2), how=states.hows.get("gradients", ()))
    return g


def add_optimizer(r: Rows, s: MemorySettings, states: States, p: ParamSplit, cpu: dict) -> float:
    opt = states.optimizer
    if "optimizer" in s.offload:
        cpu["cpu/optimizer"] = sum(opt.values())
        r.add("optimizer", 0, "offloaded to CPU (ZeRO-Offload)", how=("0",))
        return 0.0
    # bitsandbytes' paged states live in CUDA unified memory: outside PyTorch's allocator, evicted to the
    # host under pressure, so neither the peak nor an out-of-memory error counts them
    paged = OPTIMIZERS[s.optimizer].paged
    counted = 0.0
    for key, value in opt.items():
        out = paged and key != "optimizer/master"
        r.add(key, whole_bytes(value), state_note(key, s) + (" (paged: unified memory)" if out else ""),
              **({"total": None} if out else {}), how=states.hows.get(key, ()))
        counted += 0.0 if out else value
    kept = [key for key in opt if not (paged and key != "optimizer/master")]
    r.add("optimizer", whole_bytes(counted), "master weights + states" + _sharded_note(s, p, not states.weight_rows, 1)
          + ("; paged states outside PyTorch's allocator" if paged else ""), how=(" + ".join(kept) or "0",))
    return counted


def add_logits(r: Rows, s: MemorySettings, lb: LossBuffers | None, extra: float = 0.0) -> None:
    """The loss's rows (loss.py) on the last pipeline stage: the larger of its forward and backward moments,
    ``extra`` bytes beside the backward one (the in-backward step's gradient)."""
    if lb is None:
        r.add("logits", 0, "not on this pipeline stage", how=("0",))
        return
    for name, value, note in lb.rows(extra):
        r.add(name, whole_bytes(value), note, how=("by the loss's buffers (memory/loss.py)",))
    backward = lb.at_backward(extra)
    when = "at the start of backward" if backward else "while the loss runs in forward"
    how = ("max({} B in forward, {} B at the start of backward)", lb.forward, lb.backward) if not extra else \
        ("{} B at the start of backward (the larger moment with the step's gradient beside it)", lb.backward) \
        if backward else ("{} B while the loss runs in forward (the larger moment even with the step's gradient in "
                          "backward)", lb.forward)
    r.add("logits", whole_bytes(lb.backward if backward else lb.forward), f"{lb.note}; {when}", how=how)


def add_step_buffers(r: Rows, m: ModelSpec, s: MemorySettings, st: Stage, states: States, grads: float) -> tuple[float, float]:
    """The optimizer_step row; returns (its bytes, the gradients alive at the step). In backward
    (torchtune's optimizer_in_bwd) one parameter's gradient at a time is stepped and freed."""
    parts = step_buffers(s, states)
    temp = sum(parts.values())
    if s.optimizer_in_backward:
        temp, grads = _largest_grad(m, s, st, states), 0.0
        r.add("gradients", r["gradients"], "each freed by its own parameter's step in backward", total=None,
              how=r.row("gradients").how)
    r.add("optimizer_step", whole_bytes(temp), "optimizer in backward: the largest gradient, stepped as it lands"
          if s.optimizer_in_backward else step_buffer_note(s, parts, states)
          if temp else "no step temporaries (" + {"sharded": "the framework's own optimizer kernels"}.get(
              s.fw.optimizer_impl, f"{s.fw.optimizer_impl} optimizer") + ")",
          how=("{} B (the largest single gradient)", temp) if s.optimizer_in_backward and temp else
          step_how(s, parts, states) if temp else ("0",))
    return temp, grads


def add_comm_buckets(r: Rows, s: MemorySettings, states: States) -> float:
    """DeepSpeed ZeRO reduces gradients through reduce_bucket_size-element buckets (default 5e8), two of
    them under ZeRO-3 where overlap_comm defaults on; never more elements than this GPU trains."""
    if not s.fw.comm_buckets or s.zero == 0 or s.parallel.replicas == 1:
        return 0.0
    elements = min(s.fw.comm_buckets, states.trainable)
    buckets = elements * PRECISIONS[s.precision].grads * (2 if s.zero == 3 else 1)
    r.add("comm_buffers", whole_bytes(buckets), f"gradient-reduction buckets: {s.fw.comm_buckets:.0e} elements x "
          f"{PRECISIONS[s.precision].grads:g} B" + (" x 2 (overlap_comm)" if s.zero == 3 else ""),
          how=("min({} bucket elements, {} trainable) x {} B" + (" x 2" if s.zero == 3 else ""), s.fw.comm_buckets,
               states.trainable, PRECISIONS[s.precision].grads))
    return buckets


class StageStates(NamedTuple):
    """A stage's model states and their rows (weights, gradients, optimizer), the same at every seq and batch."""

    params: ParamSplit
    states: States
    rows: tuple[Row, ...]
    cpu: tuple[tuple[str, float], ...]  # what went to host memory
    resident: float  # weights on the GPU outside the gathered layers
    gradients: float
    optimizer: float
    tensors: Plan  # what the stage's layers save (saved.plan)


@ignoring("seq", "batch")
def stage_states(m: ModelSpec, s: MemorySettings, st: Stage) -> StageStates:
    p = stage_params(m, s.parallel, st)
    states = model_states(m, s, st, p)
    r, cpu = Rows("byte"), {}
    resident = add_weights(r, m, s, states, p, cpu)
    grads = add_gradients(r, s, states, p, cpu)
    opt = add_optimizer(r, s, states, p, cpu)
    return StageStates(p, states, r.build(), tuple(cpu.items()), resident, grads, opt, plan(m, s, st))


# PyTorch's caching allocator reserves more than it hands out: blocks rounded up, and segments freed
# tensors leave that the next, differently shaped tensors cannot reuse. Measured over eight
# fine-tuning steps on H100 (tests/data/gpu_measured.json: max_memory_reserved - max_memory_allocated
# relative to the bytes freed and re-allocated within a step), the median is 13%.
ALLOCATOR_SLACK = 0.13


def _offload_note(m: ModelSpec, s: MemorySettings) -> list[str]:
    """Where Megatron's activation offloading leaves more on the GPU than the whole layers the model moves: Transformer
    Engine 2.8 offloads the tensors its modules mark, and its grouped experts and context-parallel attention mark
    none."""
    if not s.offload_layers or not (m.is_moe or s.parallel.cp > 1):
        return []
    kept = "its grouped experts' saved tensors" if m.is_moe else "context-parallel attention's q, k, v and output"
    return [f"offloaded layers count as leaving whole, an underestimate: Transformer Engine keeps {kept} on the GPU "
            "(they are not marked for offloading)"]


def train_stage(m: ModelSpec, s: MemorySettings, st: Stage) -> StageMemory:
    """Every training row of one pipeline stage's GPU, its total and its summary entries.

    The peak is the larger of two moments (tests/fidelity/peak.py measures both): the start of backward,
    when every saved activation and the loss's buffers are alive, gradients too where the framework keeps
    them in persistent buffers or --grad-accum accumulates them (torch frees them at zero_grad); and the
    optimizer step, with every gradient and the optimizer's temporaries but no activations. With the
    optimizer in backward no moment holds every gradient, only the one being stepped.
    """
    p, states, rows, host, resident, grads, opt, tensors = stage_states(m, s, st)
    r, cpu = Rows("byte").extend(rows), dict(host)
    notes = [precision_note(s.precision, s.optimizer) + copy_note(s, states)] + states.notes
    lb = loss_buffers(m, s) if st.last else None
    loss, kept = (lb.peak, lb.kept) if lb else (0.0, 0.0)
    acts, rebuilt_wins = add_activations(r, m, s, st, cpu, loss, tensors)
    notes += [activation_note(s, m)] + _offload_note(m, s)
    inbwd = s.optimizer_in_backward
    add_logits(r, s, lb, _stepped_in_backward(m, s, st, states))
    if st.last and s.mini_seq > 1:
        notes.append(f"mini-sequence {s.mini_seq}: LM head and loss over {-(-s.seq // s.mini_seq)} tokens at a "
                     "time, MLP intermediates recomputed chunk by chunk (Mini-Sequence Transformer, Luo et al. 2024)")
    if rebuilt_wins:  # the rebuilt layer outweighs the loss's buffers, freed before it
        loss = 0.0
    temp, grads = add_step_buffers(r, m, s, st, states, grads)
    persistent = s.fw.persistent_grads or s.micro_batches > 1  # gradients alive while micro-batches run
    buckets = add_comm_buckets(r, s, states)
    loss, extra, stepped = beside_the_loss(lb, loss, temp if inbwd else 0.0, rebuilt_wins)
    backward = r["weights"] + opt + acts + loss + (grads if persistent else 0.0) + buckets + extra
    # torch.autocast over fp32 weights (HF's 18 B/param): the 16-bit copies are autocast's cache, saved for
    # backward and gone by the optimizer step, which updates the fp32 weights (here optimizer/master)
    autocast = s.precision == "mixed-fp32-grads" and not s.fw.persistent_grads and s.finetune == "full"
    step = (0.0 if autocast else resident) + opt + grads + temp + kept + buckets
    at_backward = backward >= step
    allocated = max(backward, step)
    _add_slack(r, s, allocated - resident - opt - buckets - (grads if persistent else 0.0))
    mark_phase(r, at_backward, persistent, loss == 0.0, autocast, inbwd and stepped, kept > 0)
    total = whole_bytes(allocated) + r["allocator"] + r["reserve"]
    r.add("total", total, "per GPU: peak allocated + allocator + reserve",
          how=("max({} B at the backward peak, {} B at the step peak) + allocator + reserve", backward, step))
    for row, value in cpu.items():  # cpu/weights, cpu/gradients, cpu/optimizer, cpu/checkpoints
        r.add(row, whole_bytes(value), "host memory, this GPU's share", total="cpu", how=("{} B", whole_bytes(value)))
    if cpu:
        r.add("cpu", whole_bytes(sum(cpu.values())), "not in total", total="cpu", how=(" + ".join(cpu),))
    flight = in_flight(s, st)
    summary = {"model_states": Quantity(whole_bytes(resident + grads + opt), "byte"),
               "params_per_gpu": Quantity(whole_bytes(p.total), "params"),
               "trainable_per_gpu": Quantity(whole_bytes(states.trainable), "params"),
               "peak_allocated": Quantity(whole_bytes(allocated), "byte"),
               "peak_reserved": Quantity(whole_bytes(allocated) + r["allocator"], "byte"),
               "peak_at": "backward" if at_backward else "optimizer step",
               "peak_backward": Quantity(whole_bytes(backward), "byte"), "peak_step": Quantity(whole_bytes(step), "byte"),
               "stage": Quantity(st.index, "count"), "in_flight": Quantity(flight, "count")}
    if s.parallel.pp > 1:
        notes.append(stage_note(st, s.parallel.pp, flight, vpp=s.vpp))
        notes += uneven_split(m.num_hidden_layers, s.parallel.pp, s.vpp) if s.vpp > 1 else []
    notes.append(f"framework {s.framework}: {s.fw.source}")
    notes.append(peak_note(at_backward, persistent, s.micro_batches, inbwd) + f"; reserve {fmt_bytes(s.reserve)} "
                 "outside PyTorch "
                 f"(CUDA context, cuBLAS); usable = capacity x {s.gpu_util:g}")
    return StageMemory(r, total, cpu, summary, notes)


def _add_slack(r: Rows, s: MemorySettings, freed: float) -> None:
    """The rows beyond what PyTorch allocates: no KV cache, the allocator's slack on ``freed`` bytes, the reserve."""
    r.add("kv_cache", 0, "training keeps no KV cache", how=("0",))
    r.add("allocator", whole_bytes(ALLOCATOR_SLACK * freed), f"caching allocator: reserved beyond allocated, "
          f"{ALLOCATOR_SLACK:.0%} of the bytes freed and re-allocated within a step (measured on H100)",
          how=("{} x {} B freed and re-allocated", ALLOCATOR_SLACK, freed))
    add_reserve(r, s.reserve)


def _stepped_in_backward(m: ModelSpec, s: MemorySettings, st: Stage, states: States) -> float:
    """The gradient alive beside the loss's backward buffers when the optimizer steps in backward; else none."""
    return _largest_grad(m, s, st, states) if s.optimizer_in_backward else 0.0


def _largest_grad(m: ModelSpec, s: MemorySettings, st: Stage, states: States) -> float:
    """The biggest single gradient (the embedding or LM head, split by TP) in full training; adapters are small."""
    if states.weight_rows:
        return 0.0
    widest = m.vocab_size * m.hidden_size if (st.first or st.last) else 0
    return max(widest, largest_block_matrix(m)) / s.parallel.tp * PRECISIONS[s.precision].grads
