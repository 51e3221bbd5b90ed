"""The fewest GPUs for a plan: any layout that fits (plan's answer to a cluster too small), and the fastest layout
within a deadline (--max-days), each by the planner's own search at every count it tries."""

from __future__ import annotations

import dataclasses
import functools
import math

from .plan import Constraints, Planner, Target, degree_tuples
from .planinputs import MAX_GPUS
from .spec import ModelSpec, SpecError

PAYS = 0.9  # a doubling of the GPUs pays where it cuts the time to train by a tenth at least


def bisect_nodes(low: int, high: int, node: int, meets) -> int:
    """The fewest GPUs, in whole nodes, between ``low`` (which does not meet ``meets``) and ``high`` (which does),
    by bisection: where meeting is not monotone in the count, a bisection's answer, not every count's minimum."""
    while high - low > node:
        mid = (low + high) // 2 // node * node
        if mid <= low:
            break
        low, high = (low, mid) if meets(mid) else (mid, high)
    return high


def count_step(cluster, c: Constraints) -> tuple[int, int, int]:
    """(the GPUs fixed --tp, --pp and --cp take, GPUs a node, the step a GPU-count search takes): whole servers
    (nodes of up to cluster.SERVER_GPUS) that the fixed degrees divide; a rack-scale NVLink domain (NVL72) by its
    largest power-of-two share, 8 of 72, whose odd factor data parallelism could not carry into a batch."""
    from .cluster import SERVER_GPUS

    fixed, per_node = (c.tp or 1) * (c.pp or 1) * (c.cp or 1), cluster.gpus_per_node
    grain = per_node if per_node <= SERVER_GPUS else per_node & -per_node
    return fixed, per_node, math.lcm(grain, fixed)


def smallest_fit(m: ModelSpec, cluster, t: Target, c: Constraints, limit: int = MAX_GPUS) -> int | None:
    """The fewest GPUs any layout fits on, found by the search's own memory check: doubling from the asked count
    (or from the GPUs the 16-bit weights alone need, if more), then bisecting, and below the first step the fewest
    of it. The steps are whole servers (nodes of up to SERVER_GPUS; a rack-scale NVLink domain, NVL72, by its
    largest power-of-two share, 8 of 72) that fixed --tp, --pp and --cp divide: a pipeline of 3 stages on 8-GPU
    servers takes 24 at a time."""
    from .cluster import SERVER_GPUS
    from .memory.placement import model_params

    fixed, per_node, unit = count_step(cluster, c)

    def any_fit(n: int) -> bool:
        p = Planner(m, cluster, dataclasses.replace(t, gpus=n), dataclasses.replace(c, dp=None))
        return any(p.possible(deg) for deg in degree_tuples(m, per_node, p.t, p.c))

    weights = model_params(m).total * 2 / (cluster.gpu.usable_bytes * c.gpu_util)
    low = t.gpus
    high = max(unit, math.ceil(max(t.gpus, weights) / unit) * unit)
    while not any_fit(high):
        low, high = high, high * 2
        if high > limit:
            return None
    high = bisect_nodes(low, high, unit, any_fit)
    if high == unit:  # fewer may do: part of a server, or of the first step on a rack
        below = min(unit, per_node) if per_node <= SERVER_GPUS else unit
        return next((n for n in range(t.gpus + 1, below) if n % fixed == 0 and any_fit(n)), unit)
    return high


def stops_paying(tried: dict[int, float]) -> int:
    """The fewest GPU counts tried past which none trains faster by a tenth a doubling: every larger count k takes
    more than time(n) x 0.9^log2(k/n) (405B at 8k, a 512-sequence batch: 8,192 GPUs at 132 days, not 65,536 at 118)."""
    counts = sorted(tried)
    return next(n for n in counts if all(tried[k] > tried[n] * PAYS ** math.log2(k / n) for k in counts if k > n))


def gpus_within(m: ModelSpec, cluster, t: Target, c: Constraints,
                seconds: float) -> tuple[int, float, int, tuple[int, float] | None]:
    """(the fewest GPUs whose fastest layout trains ``t.tokens`` within ``seconds``, its time; where no count does, 0,
    and the time and count past which doubling stops paying, stops_paying; and the power of two of nodes that met it
    first with its time, where it takes fewer GPU-hours than the fewest), by the planner's own search at each
    count with the same batch and constraints (DP follows the count): doubling from the step (count_step) times the
    power of two of nodes above the asked count, as a batch of 2^k sequences splits evenly over them (12 nodes go on
    to 16, 32, ..., not 24, 48, whose factor 3 DP cannot take), until three doublings in a row cut the time by less
    than a tenth, then bisected between the last count that misses and the first that meets.
    The time falls with GPUs though not strictly (the batch must split evenly), so the count is a bisection's,
    not every count's minimum; the global batch caps data parallelism, where doubling stops paying."""
    node, steps = count_step(cluster, c)[2], math.ceil(t.tokens / (t.global_batch * t.seq))

    @functools.lru_cache(maxsize=None)  # the bisection's last count is asked again for its time
    def train(n: int) -> float:
        try:
            ranked = Planner(m, cluster, dataclasses.replace(t, gpus=n), dataclasses.replace(c, dp=None)).search(1)
        except SpecError:  # no layout multiplies out at this count (a fixed degree, the batch)
            return math.inf
        return steps * ranked[0].time.total if ranked else math.inf

    low = t.gpus  # the asked count misses (the caller's layout did)
    high = node << max(0, -(-t.gpus // node) - 1).bit_length()  # node x the power of two at or above the nodes
    high, best, idle = high * 2 if high == low else high, math.inf, 0
    tried = {}
    while (time := train(high)) > seconds:
        idle = idle + 1 if time > PAYS * best else 0  # three times in a row no better: the batch caps DP
        best, tried[high] = min(best, time), time
        if high * 2 > MAX_GPUS or idle == 3:
            at = stops_paying(tried)
            return 0, tried[at], at, None
        low, high = high, high * 2
    power = high
    high = bisect_nodes(low, high, node, lambda n: train(n) <= seconds)
    # the time falls unevenly with GPUs: the power of two above can finish sooner on fewer GPU-hours
    cheaper = (power, train(power)) if power * train(power) < high * train(high) else None
    return high, train(high), high, cheaper
