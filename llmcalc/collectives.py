"""The links a layout's collectives run over (steptime's Links): which link a group of ranks uses, at what
bandwidth, the time of an all-to-all and of an MoE layer's token traffic. Per GPU, one direction, at
serving.LINK_EFFICIENCY of the spec."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .gpuspec import mesh_bandwidth
from .serving import ALLREDUCE_LATENCY, LINK_EFFICIENCY
from .spec import SpecError

if TYPE_CHECKING:
    from .steptime import Layout, Links, ModelCost

# per collective: NVLink ring start-up; an InfiniBand hop (serving.ALLREDUCE_LATENCY, nccl-tests)
LINK_LATENCY = {"intra": ALLREDUCE_LATENCY["linked"], "inter": ALLREDUCE_LATENCY["network"]}


def link(group: int, stride: int, links: "Links", rings: bool = True) -> tuple[float, float]:
    """(bandwidth, latency) of a collective over ``group`` ranks ``stride`` apart.

    Inside a node: the GPU's NVLink/xGMI bandwidth; on a switchless mesh (Links.peer) a group of r ranks runs
    r - 1 rings over disjoint links, (r - 1) x the peer link at most that, and a send has one link. Across nodes,
    NCCL runs one ring per channel, each leaving the node through its own NIC; with k ranks of the group in each
    node the k NICs carry k rings at once, so the collective moves at k x the per-GPU network bandwidth, at most
    the NVLink's. A point-to-point send (``rings`` False) leaves through the sender's own NIC.
    """
    if group * stride <= links.node_gpus:
        return mesh_bandwidth(links.intra, links.peer, group if rings else 2) * LINK_EFFICIENCY, LINK_LATENCY["intra"]
    k = max(1, links.node_gpus // stride) if rings else 1
    return (min(links.intra, k * links.inter) if k > 1 else links.inter) * LINK_EFFICIENCY, LINK_LATENCY["inter"]


def check_links(links: "Links", gpus: int) -> None:
    """A plan needs a bandwidth for every link its collectives may cross (0 means none)."""
    if links.intra <= 0 and min(gpus, links.node_gpus) > 1:
        raise SpecError("the GPU states no GPU-to-GPU bandwidth (interconnect_gb_s 0); give its NVLink or PCIe figure")
    if links.inter <= 0 and gpus > links.node_gpus:
        raise SpecError(f"{gpus} GPUs span nodes of {links.node_gpus}, but the cluster states no network between "
                        "them (network_gb_s 0); give its bandwidth per GPU")


def all_to_all(nbytes: float, group: int, stride: int, links: "Links") -> float:
    """Seconds for one all-to-all in which each rank holds ``nbytes`` and keeps 1/group of them. Inside a
    node over NVLink; across nodes the bytes for other nodes leave through the GPU's own NIC (no ring
    aggregates NICs here), while those for its node's k ranks cross NVLink at the same time."""
    if group == 1:
        return 0.0
    if group * stride <= links.node_gpus:
        return nbytes * (group - 1) / group / (mesh_bandwidth(links.intra, links.peer, group) * LINK_EFFICIENCY) + LINK_LATENCY["intra"]
    k = max(1, links.node_gpus // stride)  # the group's ranks in each node
    inside = nbytes * (k - 1) / group / (links.intra * LINK_EFFICIENCY) if k > 1 else 0.0
    outside = nbytes * (group - k) / group / (links.inter * LINK_EFFICIENCY)
    return max(inside, outside) + LINK_LATENCY["inter"]


def moe_traffic(c: "ModelCost", links: "Links", lay: "Layout", tokens: float, layers: int, compute: float,
                repeated: bool = False) -> tuple[float, float]:
    """The token traffic of ``layers`` MoE layers (Megatron-Core's all-to-all dispatcher, core 0.15): each GPU
    dispatches its ``tokens`` (its sequence-parallel shard) x top_k copies over the EP group, whose ranks sit
    etp apart (the expert rank order tp-ep-dp; all_to_all), and the expert's etp ranks all-gather
    what they received and reduce-scatter what the experts return, in place of a dense MLP's TP collectives.
    Dispatch and combine forward, their gradients backward (two more where recomputation ``repeated`` the MoE
    layers' forward: steptime.moe_redone), exposed but for what ep_overlap runs under ``compute`` (those layers'
    forward and backward). Returns (exposed, alone): alone, all of it, as where no other micro-batch runs beside."""
    if not layers:
        return 0.0, 0.0
    routed = tokens * c.top_k * c.hidden * 2  # bytes
    etp, passes = lay.expert_tp, 6 if repeated else 4
    comm = passes * all_to_all(routed, lay.ep, etp, links)
    if etp > 1:  # each all-gather and reduce-scatter moves the (etp - 1) other ranks' tokens
        bw, lat = link(etp, 1, links)
        comm += passes * (routed * (etp - 1) / bw + lat)
    if ep_overlapped(lay):
        return max(0.0, layers * comm - compute), layers * comm
    return layers * comm, layers * comm


def ep_overlapped(lay: "Layout") -> bool:
    """Whether ``lay`` runs --ep-overlap: Megatron-Core refuses overlap_moe_expert_parallel_comm under full
    recomputation and on a pipeline that does not interleave."""
    return lay.ep_overlap and lay.recompute != "full" and (lay.pp == 1 or lay.vpp > 1)


def ep_unpaired(lay: "Layout") -> float:
    """Micro-batches' worth of MoE traffic --ep-overlap leaves exposed: it pairs one micro-batch's forward with
    another's backward in the steady 1F1B phase only (Megatron-Core's combined_1f1b), so without a pipeline the
    first forward and the last backward run alone (one micro-batch's worth), and interleaved the first stage's
    warm-up chunk forwards and as many cool-down backwards (each chunk 1/v of a micro-batch): 2(p - 1) + (v - 1)p,
    and one more, which the overlap schedules so that the paired forward and backward are independent
    (get_pp_rank_microbatches: num_warmup_microbatches += 1; ep_warmup)."""
    if not ep_overlapped(lay):
        return 0.0
    m, p, v = lay.micro_batches, lay.pp, lay.vpp
    return 1.0 if p == 1 else min(m * v, 2 * (p - 1) + (v - 1) * p + ep_warmup(lay)) / v


def ep_warmup(lay: "Layout") -> int:
    """The warm-up chunk --ep-overlap adds to an interleaved pipeline (ep_unpaired), which the first stage also holds."""
    return 1 if ep_overlapped(lay) and lay.pp > 1 else 0
