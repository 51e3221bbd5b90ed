"""Activations saved for backward in training, per GPU: one layer by group, the layers a stage holds,
embedding, head, the transients rebuilt one layer at a time, and autocast's weight copies.

activations.py lists what one block saves; this module applies recomputation (Korthikanti et al. 2022),
Mini-Sequence chunking, CPU-offloaded checkpoints, QLoRA's bitsandbytes matmuls and the micro-batches in
flight under 1F1B, and writes the activations rows.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from ..breakdown import Rows
from ..dtypes import DTYPE_BYTES
from ..params import attention_linears, largest_block_matrix, mlp_linears
from ..spec import ModelSpec, SpecError
from .activations import (ADAPTER_SOURCES, GROUPS, Saved, adapter_tensors, input_split, kept, layer_tensors,
                          local, norm_tensors)
from .autocast import stream_bytes, weight_copies
from .placement import Stage, pipeline_in_flight, trainable
from .recompute import ATTENTION_SIDE, COVERS, OUTPUT_DISCARDING, REBUILT
from .settings import MemorySettings
from .stage import whole_bytes

PER_LAYER_ROWS = {  # activations.GROUPS -> (row, note)
    "norms": ("activations/per_layer/norms", "norm inputs and statistics"),
    "attention": ("activations/per_layer/attention", "projection inputs, q, k, v, output"),
    "scores": ("activations/per_layer/scores", "s x s softmax output (eager only)"),
    "mlp": ("activations/per_layer/mlp", "MLP input and intermediates"),
    "dropout": ("activations/per_layer/dropout", "dropout masks, 1 B per element"),
    "adapters": ("activations/per_layer/adapters", "LoRA: input copies, dropout masks, lora_A outputs"),
}
RECOMPUTE_NOTES = {"none": "every saved tensor kept", "selective": "the {} recomputed",
                   "full": "each layer's input kept, one layer rebuilt at a time"}


def rebuilt(s: MemorySettings) -> str:
    """What selective recomputation rebuilds: the s x s attention terms (Megatron-Core's core_attn), and what the
    other modules named hold."""
    return ", ".join(REBUILT[x] for x in s.recompute_modules)


def in_flight(s: MemorySettings, st: Stage) -> float:
    """Micro-batches whose activations one GPU holds: p - i on stage i under 1F1B (p on the first, 1 on the last;
    Narayanan et al. 2021, Korthikanti et al. 2022), p + (p - 1)/v on the first interleaved over v virtual stages;
    at most the step's micro-batches (placement.pipeline_in_flight)."""
    return pipeline_in_flight(s.parallel.pp, s.vpp, st.index, s.micro_batches)


class LayerCost(NamedTuple):  # one per layer kind and point of a sweep
    """One layer kind's saved bytes, this GPU: kept through the step (per) and rebuilt one at a time (extra)."""

    groups: dict
    layer: float  # every saved tensor of the layer
    per: float  # kept per layer until its backward
    extra: float  # alive for one layer only: recomputed terms, one Mini-Sequence chunk


def layer_cost(kind: Kind, s: MemorySettings, loc, checkpoint: float) -> LayerCost:
    """Korthikanti et al.: selective recomputation rebuilds the s x s terms, full keeps each layer's input
    and rebuilds one layer at a time; Mini-Sequence keeps the MLP input only and recomputes per chunk."""
    sizes = loc.sizes(kind.sizes)
    g = dict.fromkeys(GROUPS, 0.0)  # bytes saved for backward by per-layer row (activations.GROUPS)
    for i, group in kind.groups:
        g[group] += sizes[i]
    layer = sum(g.values())
    inner = sum([sizes[i] for i in kind.inner])
    scores = sum([sizes[i] for i in kind.scores])
    M = s.mini_seq
    mst, chunk = (inner, inner / M) if M > 1 else (0.0, 0.0)
    if s.recompute == "none":
        return LayerCost(g, layer, layer - mst, chunk)
    if s.recompute == "selective":  # the named modules' tensors, dropped after forward, rebuilt one layer at a time
        # (an output-discarding module's twice over: Megatron-Core's CheckpointWithoutOutput refills the freed
        # outputs from a recomputed copy its context keeps until the checkpoint's backward; tensor_parallel/random.py,
        # core 0.15), the MLP's freed before the attention's are rebuilt (recompute.ATTENTION_SIDE)
        named = s.recompute_modules
        core = scores if "core_attn" in named else 0.0
        dropped, rebuilt = 0.0, {True: core, False: 0.0}  # rebuilt at once on the attention's side, the MLP's
        for i, module in kind.modules:
            if (module in named or COVERS.get(module) in named) and not (M > 1 and i in kind.inner):
                dropped += sizes[i]  # refilled once more where its own output-discarding checkpoint is named
                twice = module in named and module in OUTPUT_DISCARDING
                rebuilt[module in ATTENTION_SIDE] += sizes[i] * (2 if twice else 1)
        return LayerCost(g, layer, layer - core - dropped - mst, max(rebuilt.values()) + chunk)
    return LayerCost(g, layer, checkpoint, layer - checkpoint - mst)


def _layer_kinds(st: Stage) -> list[tuple[bool, int]]:
    """(is MoE, how many) of the layer kinds on a stage: DeepSeek's dense layers come first."""
    return ([(False, st.dense)] if st.dense else []) + ([(True, st.moe)] if st.moe else [])


_TOKEN_IDS = Saved("", "", 8)  # int64 token ids, kept for the embedding's gradient


def _embedding_activations(m: ModelSpec, s: MemorySettings, loc, full: bool) -> tuple[float, str]:
    """Token ids (8 B, for the embedding's gradient), embedding dropout mask, HF's rope cos/sin."""
    e, tokens = DTYPE_BYTES[s.compute_dtype], math.ceil(s.seq / s.parallel.cp)
    emb = loc.bytes(_TOKEN_IDS) if full else 0.0
    if m.dropout > 0:
        emb += loc.bytes(Saved("", "", 1 * m.hidden_size))
    if m.position_embedding == "rotary":
        emb += 2 * tokens * m.qk_head_dim * e
    if m.position_embedding == "learned" and full:  # int64 position ids, shared by the batch
        emb += 8 * tokens
    ids = "token and position ids" if m.position_embedding == "learned" else "token ids"
    what = ([ids] if full else []) + (["dropout mask"] if m.dropout > 0 else []) + \
        (["rope cos/sin"] if m.position_embedding == "rotary" else [])
    return emb, ", ".join(what)


def _head_tensors(m: ModelSpec, s: MemorySettings, full: bool) -> tuple[Saved, ...]:
    """Final norm, the LM head's input (only when the head trains), labels."""
    e, h = DTYPE_BYTES[s.compute_dtype], m.hidden_size
    items = (norm_tensors(m, h, e) if m.final_norm else []) + [Saved("", "", e * h, needs=("lm_head",)), Saved("", "", 8)]
    return tuple(t for t in items if kept(t, None if full else frozenset()))


def base_inputs_saved(m: ModelSpec, s: MemorySettings) -> frozenset | None:
    """Which frozen-or-not base weights keep their input for backward (activations.kept): all of them
    in full training; none under LoRA (torch skips a frozen weight's input); every linear in QLoRA on
    bitsandbytes before 0.43.2 (its MatMul4Bit kept its input whenever the input needed a gradient;
    PR #1270 dropped it)."""
    if s.finetune == "full":
        return None
    if s.finetune == "qlora" and s.bnb_keeps_input:
        return frozenset(trainable(m, "lora", ("all",)))
    return frozenset()


def _layer_items(m: ModelSpec, s: MemorySettings, moe: bool) -> tuple[Saved, ...]:
    e = DTYPE_BYTES[s.compute_dtype]
    fp8 = {}
    if s.fp8:
        from .fp8 import proj_copy, saved_input

        fp8 = dict(fp8_input=saved_input(s.fp8), fp8_proj_copy=proj_copy(s.fp8))
    items = layer_tensors(m, s.attention_impl, e, moe, repeat_kv=s.fw.repeats_kv, compiled=s.compile,
                          fused_qkv=s.fw.fused_qkv_lora, native_act=s.fw.native_activations,
                          fused=s.fw.fused_kernels, **fp8)
    if s.finetune != "full":
        a = DTYPE_BYTES[s.fw.adapter_dtype or s.compute_dtype]
        items += adapter_tensors(m, trainable(m, s.finetune, s.lora_targets), s.lora_rank, a, e, s.lora_dropout, moe,
                                 fused_qkv=s.fw.fused_qkv_lora, compiled=s.compile,
                                 base_keeps=base_inputs_saved(m, s) or frozenset())
    return tuple(items)


class Kind(NamedTuple):
    """One layer kind's saved tensors, sorted out once: how many layers; each tensor's (bytes per token, per
    key, split) for Local.sizes; the tensors kept for backward by group, the kept MLP intermediates (what
    Mini-Sequence chunks) and the s x s terms, as indexes."""

    n: int
    sizes: tuple[tuple[float, bool, str], ...]
    groups: tuple[tuple[int, str], ...]
    inner: tuple[int, ...]
    scores: tuple[int, ...]
    modules: tuple[tuple[int, str], ...] = ()  # (index, Saved.module) of the tensors a recompute module rebuilds


def sorted_out(items: tuple[Saved, ...] | list[Saved], n: int, targets: frozenset | None) -> Kind:
    """``n`` layers saving ``items``, sorted out (Kind); ``targets``: the weights that train (None: all)."""
    return Kind(n, _specs(items), tuple((i, t.group) for i, t in enumerate(items) if kept(t, targets)),
                tuple(i for i, t in enumerate(items) if t.inner and kept(t, targets)),
                tuple(i for i, t in enumerate(items) if t.per_key),
                tuple((i, t.module) for i, t in enumerate(items) if t.module and kept(t, targets)))


def _specs(items: tuple[Saved, ...]) -> tuple[tuple[float, bool, str], ...]:
    return tuple((t.nbytes, t.per_key, t.split) for t in items)


class Plan(NamedTuple):
    """The tensors a stage's GPU saves, the same at every seq and batch: each layer kind's, a layer's input,
    the head's (last stage)."""

    kinds: tuple[Kind, ...]
    layer_input: Saved
    head: tuple[tuple[float, bool, str], ...]


def plan(m: ModelSpec, s: MemorySettings, st: Stage) -> Plan:
    """Reads neither seq nor batch: memoized with the stage's model states (training.stage_states)."""
    targets = base_inputs_saved(m, s)
    return Plan(kinds=tuple(sorted_out(_layer_items(m, s, moe), n, targets) for moe, n in _layer_kinds(st)),
                layer_input=Saved("norms", "layer input", stream_bytes(s) * m.hidden_size),
                head=_specs(_head_tensors(m, s, s.finetune == "full")) if st.last else ())


def previous_step(m: ModelSpec, s: MemorySettings, st: Stage, loc) -> float:
    """bitsandbytes < 0.43.2 keeps each 4-bit matmul's input on its autograd node (ctx.tensors), which
    backward does not free; a loop that holds its last outputs (LitGPT's logits, a plain loop's out)
    until the next forward returns keeps every one of the previous step's inputs alive through that
    forward: one per distinct input (q, k and v share theirs, gate and up theirs), the LM head's too where
    it is quantized. Measured on H200 with LitGPT 0.5.13 and MatMul4Bit patched to keep its input as
    0.42 did: Llama-2-7B, 2 x 512 tokens, the second step's forward peak is 1.68 GB above the first's."""
    if not (s.finetune == "qlora" and s.bnb_keeps_input and s.fw.keeps_logits) or s.recompute == "full":
        return 0.0
    e = DTYPE_BYTES[s.compute_dtype]
    held = 0.0
    for moe, n in _layer_kinds(st):
        lins = {**attention_linears(m), **mlp_linears(m, m.expert_size if moe else m.intermediate_size)}
        inputs = {ADAPTER_SOURCES.get(name, name): lin.fan_in for name, lin in lins.items()}
        copies = m.num_experts_per_tok if moe else 1
        held += n * sum(loc.bytes(Saved("", name, e * width * (copies if name in ("mlp", "down") else 1),
                                        input_split(name))) for name, width in inputs.items())
    if st.last and s.fw.quantizes_head:
        held += loc.bytes(Saved("", "LM head input", e * m.hidden_size))
    return held


def _dequantized(m: ModelSpec, s: MemorySettings, st: Stage) -> float:
    """QLoRA: bitsandbytes dequantizes each 4-bit weight to the compute dtype for its matmul, in forward
    and again in backward; the largest linear's copy is the one that counts (the LM head's where the
    framework quantizes it); two copies where it dequantizes to fp16 and casts to bf16 (Lightning)."""
    if s.finetune != "qlora":
        return 0.0
    largest = largest_block_matrix(m)
    if s.fw.quantizes_head and st.last:
        largest = max(largest, m.vocab_size * m.hidden_size)
    copies = 2 if s.fw.nf4_from_fp16 and s.compute_dtype != "fp16" else 1
    return copies * largest * DTYPE_BYTES[s.compute_dtype] / s.parallel.tp


# The tensors autograd keeps are summed op by op in memory/activations.py (Korthikanti et al. 2022's
# sbh terms, checked against torch's saved-tensor hooks): too many terms to write out on one line.
SAVED_HOW = "by the tensors each op keeps for backward over {} tokens on this GPU (memory/activations.py)"


def offloaded_layers(s: MemorySettings, st: Stage) -> tuple[int, int]:
    """(layers whose saved tensors wait in host memory, layers on the GPU at the peak) under Megatron-Core's
    activation offloading (cpu_offloading_num_layers; Transformer Engine 2.8 cpu_offload.py): the first n layers'
    tensors leave as the forward goes on, each freed by the window layer_window_map gives it, the last as the
    forward ends, and come back one group ahead in backward: the GPU holds the other layers and one in transit."""
    n = s.offload_layers
    if n >= st.layers:
        raise SpecError(f"--offload-layers {n} must be below the model's {st.layers} layers (Megatron offloads fewer "
                        "than all)")
    return n, st.layers - n + 1 if n else st.layers


def _layer_rows(r: Rows, s: MemorySettings, st: Stage, costs: list, saved: float, offloaded: bool, tokens: float,
                flight: int, sent: tuple[float, float] = (0.0, 0.0)) -> None:
    """One layer's rows by group (the layer kind the stage has most of), and the stage's layers in flight."""
    shown = max(costs, key=lambda cn: cn[1])[0]
    groups = [g for g in GROUPS if shown.groups[g]]
    for g in groups:
        row, note = PER_LAYER_ROWS[g]
        r.add(row, whole_bytes(shown.groups[g]), note, total=None, how=(SAVED_HOW, tokens))
    r.add("activations/per_layer", whole_bytes(shown.layer), "one layer, one micro-batch, this GPU", total=None,
          how=(" + ".join(PER_LAYER_ROWS[g][0] for g in groups) or "0",))
    per_kind = (" + ".join(["{} B x {} layers"] * len(costs)), *(x for c, n in costs for x in (c.per, n)))
    away = s.offload_layers
    how = ("({}) x {} micro-batches in flight", per_kind, flight) if not away else (
        "{} - {} B offloaded + {} B in transit", per_kind, *sent)
    r.add("activations/layers", whole_bytes(saved), f"{st.layers} layers"
          + (f" x {flight} micro-batches in flight" if flight > 1 else "")
          + {"none": "", "selective": f", {rebuilt(s)} recomputed", "full": ", layer inputs only"}[s.recompute]
          + (", offloaded to CPU" if offloaded else "")
          + (f", {away} offloaded to CPU (one in transit)" if away else ""),
          how=how if not offloaded else ("0",))


def add_activations(r: Rows, m: ModelSpec, s: MemorySettings, st: Stage, cpu: dict, loss: float,
                    tensors: Plan) -> tuple[float, bool]:
    """The activations rows: one layer by group, the stage's layers in flight, embedding, head, transient;
    returns their total at the peak and whether the transient, not the loss, is what counts there.

    The transient (a layer rebuilt by recomputation, a Mini-Sequence chunk, a dequantized weight) is
    alive in backward after the loss's buffers are freed, so only the larger of the two counts."""
    par, flight = s.parallel, in_flight(s, st)
    loc = local(m, s.attention_impl, s.batch * math.ceil(s.seq / par.cp), s.seq, par.tp, par.sp, s.fw.repeats_kv,
                par.expert_tp)
    kinds, layer_input, head_tensors = tensors  # plan(m, s, st)
    checkpoint = loc.bytes(layer_input)  # Korthikanti's 2sbh
    costs = [(layer_cost(kind, s, loc, checkpoint), kind.n) for kind in kinds]
    saved = sum(c.per * n for c, n in costs)
    copies, rebuilt_copies, copies_note = weight_copies(m, s, st)
    held = previous_step(m, s, st, loc) * flight
    transient = max(c.extra for c, _ in costs) + _dequantized(m, s, st) + rebuilt_copies
    offloaded = (s.fw.offload_checkpoints or "activations" in s.offload) and s.recompute == "full"
    if offloaded:  # Unsloth's offloaded checkpoints: layer inputs wait in host memory, one comes back at a time
        cpu["cpu/checkpoints"] = saved * flight
        transient, saved = transient + checkpoint, 0.0
    sent = last = 0.0
    if s.offload_layers:  # Megatron's activation offloading (pp 1): the first layers, dense ones first (DeepSeek's)
        left = offloaded_layers(s, st)[0]
        for c, n in costs:
            k = min(n, left)
            sent, left, last = sent + k * c.per, left - k, c.per if k else last
        cpu["cpu/activations"] = sent
        saved += last - sent  # the last one sent is still leaving as the forward ends, and comes back first
    _layer_rows(r, s, st, costs, saved * flight, offloaded, loc.tokens, flight, (sent, last))
    emb = head = 0.0
    if st.first:
        emb, what = _embedding_activations(m, s, loc, s.finetune == "full")
        emb *= flight
        r.add("activations/embedding", whole_bytes(emb), what, how=(SAVED_HOW, loc.tokens))
    if st.last:
        head = sum(loc.sizes(head_tensors))
        r.add("activations/head", whole_bytes(head), "final norm, LM head input, labels", how=(SAVED_HOW, loc.tokens))
    if copies:
        r.add("activations/weight_copies", whole_bytes(copies * flight), copies_note,
              how=("{} B x {} micro-batches in flight", copies, flight))
    counted = transient + held > loss
    _passing_rows(r, s, held, transient, counted, offloaded, loc.tokens)
    total = saved * flight + emb + head + copies * flight + (transient + held if counted else 0.0)
    parts = [n for n in ("activations/layers", "activations/embedding", "activations/head", "activations/weight_copies")
             if n in r] + ([n for n in ("activations/previous_step", "activations/transient") if n in r] if counted else [])
    r.add("activations", whole_bytes(total), "saved for backward", how=(" + ".join(parts),))
    return total, counted


def _passing_rows(r: Rows, s: MemorySettings, held: float, transient: float, counted: bool, offloaded: bool,
                  tokens: float) -> None:
    """The last step's held inputs and the transient; in the total only where they outlast the loss's buffers."""
    alive = "" if counted else " (not alive with the loss's buffers)"
    if held:
        r.add("activations/previous_step", whole_bytes(held), "the last step's 4-bit matmul inputs, kept on their "
              "autograd nodes (bitsandbytes < 0.43.2) while the loop holds its outputs into this forward" + alive,
              total=... if counted else None, how=(SAVED_HOW, tokens))
    if transient:
        r.add("activations/transient", whole_bytes(transient), _transient_note(s, offloaded) + alive,
              total=... if counted else None, how=(SAVED_HOW, tokens))


def _transient_note(s: MemorySettings, offloaded: bool) -> str:
    M = s.mini_seq
    again = {"none": "", "selective": f"one layer's recomputed {rebuilt(s)}", "full": "the layer being rebuilt"}
    parts = [again[s.recompute]] if s.recompute != "none" else []
    parts += ["its input brought back from CPU"] if offloaded else []
    parts += ["its bf16 weight copies (autocast)"] if s.autocast_base and s.recompute == "full" else []
    parts += [f"one MLP chunk of s/{M} tokens"] if M > 1 else []
    parts += ["one dequantized 4-bit weight (bitsandbytes)"] if s.finetune == "qlora" else []
    return " + ".join(parts)


def activation_note(s: MemorySettings, m: ModelSpec) -> str:
    code = {"litgpt": "LitGPT's modules", "torchtune": "torchtune's modules (as HF's, k/v expanded)",
            "megatron": "Megatron-Core's Transformer Engine modules"}.get(s.framework, "HF transformers modules")
    how = "under torch.compile (inductor rebuilds pointwise results in backward)" if s.compile else "save them"
    if s.compile and (s.attention_impl == "eager" or m.is_moe or s.mini_seq > 1):
        how += "; compile measured with sdpa on dense layers only, the rest counted as eager"
    return (f"activations as {code} {how} ({s.attention_impl} attention, {s.compute_dtype}); "
            f"{RECOMPUTE_NOTES[s.recompute].format(rebuilt(s))}; per_layer = one layer, one micro-batch of {s.batch} "
            "on this GPU")
