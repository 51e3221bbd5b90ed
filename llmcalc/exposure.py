"""What of a step's pipeline and data-parallel communication stays exposed (steptime's pp and dp terms).

- PP: each activation sent to the next stage (and its gradient returned) waits in full, or, where the
  interleaved schedule overlaps its sends (Megatron's overlap_p2p_comm), only what outlasts one chunk's forward;
- DP: the gradients' reduce-scatter and the parameters' all-gather (dp_traffic) once per step under the last
  backward and the next first forward (ZeRO 0-2, Megatron-Core's overlap_grad_reduce/param_gather), or under
  every micro-batch (ZeRO-3/FSDP; with BACKWARD_PREFETCH "post" the backward's all-gathers exposed);
  DP_EXPOSED_FLOOR of them no compute hides;
- the optimizer step, after the gradients are reduced and before the next forward: memory-bound, exposed;
- activation offloading: each offloaded layer's copy to host memory and back, what outlasts the compute it runs
  under (offload_exposed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .collectives import link
from .serving import FLOAT_BANDWIDTH

if TYPE_CHECKING:
    from .steptime import Layout, Links, MicroBatch

DP_EXPOSED_FLOOR = 0.1  # the share of the gradient reduction no backward hides (the last buckets)
# When ZeRO-3/FSDP issues the backward's next all-gather (PyTorch FSDP's BackwardPrefetch): "pre", before the current
# unit's gradient computation, under it (PyTorch FSDP's default BACKWARD_PRE; FSDP2, DeepSpeed ZeRO-3 and Megatron
# FSDP prefetch likewise); "post", after it (BACKWARD_POST: Composer's FSDPConfig default, which llm-foundry runs), so
# the next gradient computation waits for it: the backward's gathers are exposed.
BACKWARD_PREFETCH = ("pre", "post")
# HBM bytes one optimizer step moves per parameter of the GPU's shard (Megatron-Core 0.15 optimizer, Transformer
# Engine's FusedAdam, as steptime's memory side keeps them: fp32 master weights and Adam states): the gradient norm
# for clipping reads the fp32 gradient (4); Adam reads the master weight, gradient, m and v and writes the weight, m
# and v (16 + 12); the updated weight is read again and written as the model's copy (4 + Layout.param_bytes). A
# 16-bit gradient buffer is first cast to the fp32 gradient the optimizer steps on (2 + 4: GRAD_CAST_BYTES). Over the
# whole gradient buffer a GPU holds, not its shard, Megatron-LM also checks each bucket's norm for NaN before the
# reduction (--check-for-nan-in-loss-and-grad, on by default) and zeroes it for the next step: a read and a write of
# Layout.grad_bytes each (BUFFER_PASSES). Under fp16's loss scaling the stepped fp32 gradients are unscaled and checked
# for inf first (torch._amp_foreach_non_finite_check_and_unscale_: read and write, UNSCALE_BYTES). Not counted:
# clipping's scale, which runs only when it clips.
OPTIMIZER_BYTES, GRAD_CAST_BYTES, BUFFER_PASSES, UNSCALE_BYTES = 36, 6, 2, 8


def overlaps_sends(lay: "Layout") -> bool:
    """Megatron's overlap_p2p_comm: the interleaved schedule posts each send and runs the next chunk under it."""
    return lay.vpp > 1 and lay.pp_overlap


def exposed_send(mb: "MicroBatch", lay: "Layout") -> float:
    """One pipeline send's exposed time: all of it, or where the schedule overlaps sends what outlasts one
    chunk's forward (a backward chunk, twice as long, hides more)."""
    return max(0.0, mb.send - mb.layers_forward / lay.vpp) if overlaps_sends(lay) else mb.send


def dp_traffic(lay: "Layout", links: "Links", grads: tuple[float, float],
               gathered: tuple[float, float] | None = None) -> tuple[float, float]:
    """(seconds to reduce-scatter the gradients, seconds to all-gather the parameters) over data parallelism.
    ``grads``: (dense, routed-expert) values on this GPU; ``gathered``: their parameters' bytes where they are not
    Layout.param_bytes each (FP8 parameters beside a 16-bit embedding and head). Dense weights are shared by the
    dp x cp ranks (CP ranks next to the TP ones, then DP); an expert by tp x dp x cp / (ep x etp) of them
    (Megatron's expert-data group, etp x ep ranks apart)."""
    reduce = gather = 0.0
    edp = _expert_dp(lay)
    nbytes = gathered or tuple(values * lay.param_bytes for values in grads)
    for values, params, d, stride in ((grads[0], nbytes[0], lay.dp * lay.cp, lay.tp),
                                      (grads[1], nbytes[1], edp, lay.expert_tp * lay.ep)):
        if d > 1 and values:
            bw, lat = link(d, stride, links)
            reduce += (d - 1) / d * values * lay.grad_bytes / bw + lat  # reduce-scatter of the gradients
            gather += (d - 1) / d * params / bw + lat  # all-gather of the parameters
    return reduce, gather


def dp_exposed(lay: "Layout", traffic: tuple[float, float], per_mb: float, compute: float, units: int = 1) -> float:
    """Exposed data-parallel communication of one step (``traffic``: dp_traffic's; ``per_mb``: one micro-batch's
    time; ``compute``: its forward and backward): once per step (ZeRO 0-2), or every micro-batch (ZeRO-3, whose
    ``units``, the layers each gathered on its own, start every forward with a gather nothing hides and end every
    backward with a reduce-scatter: one unit's of each a micro-batch, or DP_EXPOSED_FLOOR of one micro-batch's
    traffic a step where that is more)."""
    reduce, gather = traffic
    if not reduce:
        return 0.0
    if lay.zero >= 3:  # all-gather forward, all-gather backward, reduce-scatter: under each micro-batch
        m, each = lay.micro_batches, 2 * gather + reduce
        edges = max(m * (gather + reduce) / units, each * DP_EXPOSED_FLOOR)
        prefetched = m * max(each - per_mb, 0.0) + edges
        if lay.backward_prefetch == "post":  # the backward's gathers wait; the forward's and the reduce-scatter hide
            hidden = gather + reduce  # (where the link binds, no better than prefetched)
            return max(prefetched, m * (gather + max(hidden - per_mb, 0.0)) + max(m * hidden / units,
                                                                                 hidden * DP_EXPOSED_FLOOR))
        return prefetched
    if not lay.dp_overlap:  # reduced after the backward, gathered before the forward: all exposed
        return 2 * reduce if lay.zero == 0 else reduce + gather
    if lay.zero == 0:  # one all-reduce (reduce-scatter + all-gather of the gradients) after the last backward
        return max(2 * reduce - 2 / 3 * compute, DP_EXPOSED_FLOOR * 2 * reduce)
    # distributed optimizer: gradients reduce-scattered under the last backward, the updated parameters
    # all-gathered under the next step's first forward (Megatron-Core overlap_grad_reduce/param_gather)
    return max(reduce - 2 / 3 * compute, DP_EXPOSED_FLOOR * reduce) + max(gather - compute / 3, DP_EXPOSED_FLOOR * gather)


def offload_exposed(lay: "Layout", mb: "MicroBatch", layers: int, layer_bytes: float, host: float) -> float:
    """Exposed seconds a step of activation offloading's copies (Megatron-Core's cpu_offloading_num_layers on
    Transformer Engine 2.8's AsyncDoubleBufferGroupOffloadHandler, cpu_offload.py): the first n = Layout.offload of
    the rank's ``layers`` send their saved tensors (``layer_bytes`` a layer a micro-batch) to host memory at ``host``
    bytes a second in forward and bring them back in backward, one layer's at a time, spread over the stack: each
    copy runs under the layers between two of TE's window marks (offload_windows), and the compute stream waits for
    it at the second. So each offloaded layer exposes what its copy outlasts of its window's forward, and of the
    window's backward (twice as long) on its way back."""
    if not lay.offload:
        return 0.0
    copy, forward = layer_bytes / host, mb.layers_forward / layers  # one layer's forward
    exposed = sum(max(0.0, copy - w * forward) + max(0.0, copy - 2 * w * forward)
                  for w in offload_windows(layers, lay.offload))
    return lay.micro_batches * exposed


def offload_windows(layers: int, n: int) -> list[int]:
    """The layers each of n offloaded layers' copies runs under: the gaps between TE 2.8's layer_window_map marks
    ((L // n)(i + 1) - 1, the first L % n of them i + 1 later, the rest as late as the last of those), the first
    from the stack's start. L = 80, n = 40: 1, then 2 x 39; n = 41: 1, 2 x 38, 1, 1."""
    marks, shift = [], 0
    for i in range(n):
        if i < layers % n:
            shift = i + 1
        marks.append(layers // n * (i + 1) - 1 + shift)
    return [b - a for a, b in zip([0] + marks, marks)]


def host_rate(lay: "Layout", links: "Links", per_mb: float, traffic: tuple[float, float]) -> float:
    """Bytes a second the GPU's host link gives offloading's copies. The GPU's NIC reaches it through the same link
    (GPUDirect RDMA through the PCIe switch on HGX and DGX boards; through NVLink-C2C on GB200), so while the NIC
    carries data parallelism's traffic out of the node (``traffic``: dp_traffic's seconds; ZeRO-3's every
    micro-batch, ZeRO 0-2's once a step) the copies get what its line rate leaves, at least a fair half of the link;
    the rest of the step, all of it."""
    reduce, gather = traffic
    if lay.tp * lay.cp * lay.dp <= links.node_gpus or not reduce:  # the DP group within one node: no NIC traffic
        return links.host
    busy = lay.micro_batches * (2 * gather + reduce) if lay.zero >= 3 else 2 * reduce if lay.zero == 0 else \
        reduce + gather
    share = min(1.0, busy / (lay.micro_batches * per_mb))
    return (1 - share) * links.host + share * max(links.host - links.inter, links.host / 2)


def optimizer_step(lay: "Layout", links: "Links", grads: tuple[float, float], scaled: bool = False) -> float:
    """Seconds of one optimizer step on a GPU holding ``grads`` (dense, routed-expert) parameters: the whole of them
    under plain data parallelism, a dp x cp (an expert's: expert-data) share under ZeRO 1-3, at HBM speed
    (serving.FLOAT_BANDWIDTH); and the passes over the gradient buffer, whole but under ZeRO-3 (BUFFER_PASSES).
    ``scaled``: fp16 training's loss scale is undone first."""
    stepped, buffer = optimizer_counts(lay, grads)
    return (stepped * optimizer_bytes(lay, scaled) + buffer * BUFFER_PASSES * lay.grad_bytes) / (
        links.hbm * FLOAT_BANDWIDTH)


def optimizer_counts(lay: "Layout", grads: tuple[float, float]) -> tuple[float, float]:
    """(parameters the GPU's optimizer steps, gradients its buffer holds) of ``grads`` (dense, routed-expert)."""
    dense, experts = grads
    stepped = dense / (lay.dp * lay.cp) + experts / _expert_dp(lay) if lay.zero >= 1 else dense + experts
    return stepped, stepped if lay.zero >= 3 else dense + experts


def optimizer_bytes(lay: "Layout", scaled: bool = False) -> int:
    """HBM bytes the optimizer step moves per parameter it steps (OPTIMIZER_BYTES; UNSCALE_BYTES under fp16's loss
    scaling)."""
    return OPTIMIZER_BYTES + lay.param_bytes + (GRAD_CAST_BYTES if lay.grad_bytes == 2 else 0) + UNSCALE_BYTES * scaled


def _expert_dp(lay: "Layout") -> int:
    """Megatron's expert data-parallel degree: the ranks holding the same slice of an expert."""
    return lay.tp * lay.dp * lay.cp // (lay.ep * lay.expert_tp)
