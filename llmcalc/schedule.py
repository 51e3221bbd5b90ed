"""Serving under load: a discrete-event simulation of a continuous-batching scheduler.

Why a simulation: under load a request's time is set by who else is in the batch at each step
(decodes of other requests, other prompts' prefill chunks), and by the queue when the KV cache is
full; closed forms (M/D/1 and kin) cannot see chunked prefill or the KV limit. The engine's own
loop is simple enough to replay step by step, as vLLM's V1 scheduler and SGLang's run it:

- each step first gives every running request one decode token, then fills the rest of the token
  budget (``max_num_batched_tokens``) with prompt chunks, oldest request first (chunked prefill);
- a request is admitted while the running requests number fewer than ``max_num_seqs`` and the KV
  cache can hold its prompt and output (KV capacity from the memory model; no preemption);
- a request's first token comes at the end of the step that finishes its prompt, then one token per
  step until its output is done.

A step's time is that of serving.Step: max(compute, memory) + layers x per-layer cost + the
all-reduces, with compute and memory summed over the step's tokens (decode tokens read their whole
context, prefill chunks attend causally to their prompt so far). Load is closed-loop ``concurrency``
(vLLM's benchmark_serving --max-concurrency, genai-perf: a client sends its next request when the
last one ends) or open-loop ``request_rate`` (Poisson arrivals, seeded: the same answer every run).
The clients' first requests are spread evenly over one request's time (traffic.arrivals), and an idle engine
starts a step on the first request it receives. Means are taken over the requests after the first
``concurrency`` (or the first 10%), the warm-up (traffic.window).
"""

from __future__ import annotations

import functools
import heapq
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from .spec import SpecError
from .traffic import MAX_CLIENTS, MAX_REQUESTS, Load, arrivals, enough, window

MAX_STEPS = 400_000  # steps at most: a run cut there is reported overloaded (its means would depend on the cut)


class StepCosts(NamedTuple):
    """Per-step cost coefficients of one serving instance (serving.step_costs), seconds."""

    dense_per_token: float  # compute seconds per token through the layers' matmuls (the LM head apart)
    attention_per_pair: float  # compute seconds per (query, key) pair over all layers
    weights: float  # memory seconds to read the weights once (all of an MoE's experts: see expert_share)
    kv_per_position: float  # memory seconds to read one position's KV over all layers
    decode_overhead: float  # layers x per-layer cost, decode-only step
    prefill_overhead: float  # layers x per-layer cost, a step with prefill
    allreduce_per_token: float  # communication seconds per token in the step
    allreduce_per_step: float  # communication latency per step
    experts: float = 0.0  # of ``weights``, the routed experts' seconds (MoE)
    expert_share: float = 0.0  # k/E: the experts one token routes to (uniform routing)
    head_per_sequence: float = 0.0  # the LM head's compute seconds for one position: each scheduled request's last

    def weights_read(self, tokens: int) -> float:
        """Memory seconds for the weights a step of ``tokens`` reads: a step of t tokens touches
        E(1 - (1 - k/E)^t) of an MoE's experts (throughput.weight_bytes_read)."""
        return self.weights - self.experts * (1 - self.expert_share) ** tokens if self.experts else self.weights

    def step(self, tokens: int, pairs: float, positions: float, prefill: bool, sequences: int) -> float:
        """A step of ``tokens`` over ``sequences`` requests (each projects its last position to logits)."""
        compute = self.dense_per_token * tokens + self.head_per_sequence * sequences + self.attention_per_pair * pairs
        memory = self.weights_read(tokens) + self.kv_per_position * positions
        comm = self.allreduce_per_step + self.allreduce_per_token * tokens
        return max(compute, memory) + (self.prefill_overhead if prefill else self.decode_overhead) + comm


class Served(NamedTuple):
    """Steady-state means over the measured requests."""

    ttft: float
    itl: float  # time between output tokens, (e2e - ttft) / (output - 1)
    e2e: float
    output_tokens_per_s: float
    requests_per_s: float
    mean_batch: float  # running requests per step
    peak_batch: int  # running requests in the fullest step
    queued: float  # mean wait before a request's first prefill chunk
    requests: int
    steps: int
    overloaded: bool = False  # arrivals past SATURATION of the saturated rate (open loop), or a closed loop cut short
    offered: float = 0.0  # requests per second arriving (open loop)
    saturated: float = 0.0  # and the most the instance completes, never short of work (schedule.saturated)


@dataclass
class _Request:
    arrival: float
    left: int  # prompt tokens still to prefill
    first: float = 0.0
    done: float = 0.0
    admitted: float = -1.0


def simulate(costs: StepCosts, load: Load, budget: int, max_seqs: int, kv_capacity: float) -> Served:
    """Replay the scheduler (module docstring) and return the steady-state means. Open loop, a stable instance
    completes what arrives, so its throughput is the offered rate; past SATURATION of its saturated rate
    (saturated()) it is overloaded and completes that rate, the queue growing without bound."""
    if load.prompt + load.output > kv_capacity:
        raise SpecError(f"one request of {load.prompt + load.output:,} tokens does not fit the KV cache "
                        f"({int(kv_capacity):,} tokens)")
    served = _simulate(costs, load, budget, max_seqs, kv_capacity)
    if load.request_rate is None:
        return served
    # open loop, by the rates alone: a long output at a low rate can outlast the step budget without a queue
    most = saturated(costs, load.prompt, load.output, budget, max_seqs, kv_capacity)
    rate = min(load.request_rate, most)
    return served._replace(overloaded=load.request_rate > SATURATION * most, saturated=most,
                           requests_per_s=rate, output_tokens_per_s=rate * load.output)


# Open loop, an instance offered more than this share of its saturated rate is overloaded: near it the queue's
# growth outlasts any finite replay (an M/G/1 queue's wait grows as 1 / (1 - load)), and a replay's window would
# report means that keep growing with its length.
SATURATION = 0.95


@functools.lru_cache(maxsize=64)  # serve-plan asks it again for every rate it tries on the same instance
def saturated(costs: StepCosts, prompt: int, output: int, budget: int, max_seqs: int, kv_capacity: float) -> float:
    """Requests per second the instance completes when it is never short of work: a closed-loop replay with twice
    as many clients as it can run at once (max_num_seqs, or as many requests as the KV cache holds), each sending
    its next request as the last ends, so that a queue always stands (at exactly as many, the requests run in
    lockstep and finish about 3% faster than a queue lets them)."""
    clients = max(1, min(2 * min(max_seqs, int(kv_capacity // (prompt + output))), MAX_CLIENTS))
    return _simulate(costs, Load(prompt, output, concurrency=clients), budget, max_seqs, kv_capacity).requests_per_s


def _simulate(costs: StepCosts, load: Load, budget: int, max_seqs: int, kv_capacity: float) -> Served:
    n = enough(load)
    while True:
        replay = _Replay(costs, load, n, budget, max_seqs, kv_capacity)
        while replay.busy() and replay.step < MAX_STEPS:
            replay.arrive()
            replay.admit()
            if not replay.prefilling and not replay.decoding:
                if not replay.idle():
                    break
                continue
            if replay.prefilling:
                replay.chunk_until_event()
            else:
                replay.decode_until_event()
        measured = window(replay.reqs, load, n)
        if len(measured) >= 40 or n >= MAX_REQUESTS or replay.step >= MAX_STEPS:
            return _means(replay, measured)
        n = min(MAX_REQUESTS, 2 * n)  # the warm-up took most of the run: a longer one


class _Replay:
    """The scheduler's state between steps: who waits, who prefills, who decodes, the KV in use."""

    def __init__(self, costs: StepCosts, load: Load, n: int, budget: int, max_seqs: int, kv_capacity: float) -> None:
        self.costs, self.load, self.n, self.budget, self.max_seqs, self.kv_capacity = \
            costs, load, n, budget, max_seqs, kv_capacity
        self.arrivals = arrivals(load, n, costs, budget)
        self.scheduled = sum(a is not None for a in self.arrivals)  # arrivals whose time is known
        self.reqs: list[_Request] = []
        self.waiting: deque = deque()
        self.prefilling: deque = deque()  # admitted, prompt not done: oldest first
        self.finishing: list = []  # (step it finishes, index)
        self.now, self.step, self.sent = 0.0, 0, 0
        self.decoding, self.context, self.kv_used, self.batch_sum, self.peak = 0, 0.0, 0.0, 0, 0
        self.size = load.prompt + load.output  # KV positions one request holds at most

    def busy(self) -> bool:
        return bool(self.sent < self.n or self.waiting or self.prefilling or self.finishing)

    def arrive(self) -> None:
        """Requests sent by now join the queue. An idle engine wakes on the first and starts its step at once: the
        frontend hands requests over one at a time, so others sent at that instant (clients whose requests ended in
        the same step) reach it just after, and wait for the next step (vLLM V1's EngineCore blocks on its input
        queue only when it has no requests)."""
        idle = not (self.waiting or self.prefilling or self.decoding)
        while self.sent < self.n and self.arrivals[self.sent] is not None and self.arrivals[self.sent] <= self.now:
            woke = idle and self.arrivals[self.sent] == self.now  # sent just now to an engine waiting for work
            self.reqs.append(_Request(self.arrivals[self.sent], self.load.prompt))
            self.waiting.append(len(self.reqs) - 1)
            self.sent += 1
            if woke:
                return

    def admit(self) -> None:
        while (self.waiting and self.decoding + len(self.prefilling) < self.max_seqs
               and self.kv_used + self.size <= self.kv_capacity):
            i = self.waiting.popleft()
            self.reqs[i].admitted = self.now
            self.kv_used += self.size
            self.prefilling.append(i)

    def idle(self) -> bool:
        """Nothing to run: wait for the next arrival; False when none will come."""
        nxt = self.arrivals[self.sent] if self.sent < self.n else None
        if nxt is None:
            return False
        self.now = max(self.now, nxt)
        return True

    def run_step(self) -> None:
        """One engine step: a token for each decoding request, then prompt chunks into the budget left."""
        prompt = self.load.prompt
        tokens, pairs, positions = self.decoding, self.context, self.context
        room, started = self.budget - self.decoding, []
        for i in self.prefilling:  # oldest first
            if room <= 0:
                break
            chunk = min(self.reqs[i].left, room)
            done = prompt - self.reqs[i].left
            pairs += chunk * done + chunk * (chunk + 1) / 2  # causal: each new token sees its prefix
            positions += done
            tokens += chunk
            room -= chunk
            started.append((i, chunk))
        self.now += self.costs.step(tokens, pairs, positions, bool(started), self.decoding + len(started))
        self.step += 1
        self.batch_sum += self.decoding + len(started)
        self.peak = max(self.peak, self.decoding + len(started))
        self.context += self.decoding  # each decode added a position
        self._finish_due()
        for i, chunk in started:
            self._prefilled(i, chunk)

    def chunk_until_event(self) -> None:
        """Steps giving the oldest prompt all the budget the decodes leave, until its last chunk, a request ending or
        one arriving: run_step's arithmetic in a tight loop (a long prompt is hundreds of these). Else run_step."""
        r, room = self.reqs[self.prefilling[0]], self.budget - self.decoding
        if room <= 0 or r.left <= room:
            self.run_step()
            return
        c, n = self.costs, self.decoding
        tokens, done = n + room, self.load.prompt - r.left
        fixed = c.dense_per_token * tokens + c.head_per_sequence * (n + 1)  # step()'s sums, in its order
        memory = c.weights_read(tokens)
        after, comm = c.prefill_overhead, c.allreduce_per_step + c.allreduce_per_token * tokens
        nxt, stop = self._next_arrival(), min(self.finishing[0][0], MAX_STEPS) if self.finishing else MAX_STEPS
        now, step, context, left = self.now, self.step, self.context, r.left
        while left > room:
            pairs = context + (room * done + room * (room + 1) / 2)
            now += max(fixed + c.attention_per_pair * pairs, memory + c.kv_per_position * (context + done)) + after + comm
            step, context, done, left = step + 1, context + n, done + room, left - room
            if step >= stop or now >= nxt:
                break
        self.batch_sum += (n + 1) * (step - self.step)
        self.peak = max(self.peak, n + 1)
        self.now, self.step, self.context, r.left = now, step, context, left
        self._finish_due()

    def decode_until_event(self) -> None:
        """Decode-only steps, one after another, until a request ends or one arrives: run_step's
        arithmetic without its per-step bookkeeping (most steps of a long output are these)."""
        c, n = self.costs, self.decoding
        overhead = c.decode_overhead + c.allreduce_per_step + c.allreduce_per_token * n
        compute = (c.dense_per_token + c.head_per_sequence) * n
        weights = c.weights_read(n)
        nxt, stop = self._next_arrival(), min(self.finishing[0][0] if self.finishing else self.step + 1, MAX_STEPS)
        now, step, context = self.now, self.step, self.context
        while step < stop:
            now += max(compute + c.attention_per_pair * context, weights + c.kv_per_position * context) + overhead
            step += 1
            context += n
            if now >= nxt:
                break
        self.batch_sum += n * (step - self.step)
        self.peak = max(self.peak, n)
        self.now, self.step, self.context = now, step, context
        self._finish_due()

    def _finish_due(self) -> None:
        """The requests whose last token came in the step just run end (a decoding one holds prompt + output - 1
        positions of context)."""
        while self.finishing and self.finishing[0][0] == self.step:
            self._finish(heapq.heappop(self.finishing)[1], self.load.prompt + self.load.output - 1)

    def _next_arrival(self) -> float:
        nxt = self.arrivals[self.sent] if self.sent < self.n else None
        return float("inf") if nxt is None else nxt

    def _prefilled(self, i: int, chunk: int) -> None:
        r = self.reqs[i]
        r.left -= chunk
        if r.left:
            return
        self.prefilling.remove(i)
        r.first = self.now
        if self.load.output == 1:  # its one token is the first: done, never decodes
            self._finish(i, 0, decoding=False)
            return
        self.decoding += 1
        self.context += self.load.prompt
        heapq.heappush(self.finishing, (self.step + self.load.output - 1, i))

    def _finish(self, i: int, context: int, decoding: bool = True) -> None:
        self.reqs[i].done = self.now
        self.decoding -= decoding
        self.context -= context
        self.kv_used -= self.size
        self.scheduled = _next(self.arrivals, self.scheduled, self.now, self.load)


def _next(arrivals: list, scheduled: int, now: float, load: Load) -> int:
    """Closed loop: the client whose request just ended sends its next one now."""
    if load.concurrency is not None and scheduled < len(arrivals):
        arrivals[scheduled] = now
        return scheduled + 1
    return scheduled


def _rates(reqs: list[_Request], measured: list[_Request]) -> float:
    """Completions per second while the measured requests arrive: the requests of any age that end in that
    time over its length (a burst arriving at once: over the time it took)."""
    start, end = measured[0].arrival, measured[-1].arrival
    if end - start > 0:
        return sum(1 for r in reqs if r.done and start < r.done <= end) / (end - start)
    return len(measured) / max(max(r.done for r in measured) - start, 1e-12)


def _means(replay: "_Replay", window: list[_Request]) -> Served:
    """Means over the window's requests; throughput from what completes while they arrive."""
    reqs, load, n = replay.reqs, replay.load, replay.n
    steps, batch_sum, peak = replay.step, replay.batch_sum, replay.peak
    if not window:  # nothing in steady state (a run cut short): what finished at all
        window = reqs
    measured = [r for r in window if r.done]
    cut = len(measured) < len(window) or len(reqs) < n  # the step budget ran out first
    if not measured:  # not one measured request ended: what did end, flagged overloaded
        measured = [r for r in reqs if r.done]
    if not measured:
        raise SpecError(f"the replay ran {steps:,} steps and no request ended: each needs more than the replay "
                        "can run at this load; lower --concurrency or --output")
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    ttft = mean([r.first - r.arrival for r in measured])
    e2e = mean([r.done - r.arrival for r in measured])
    itl = mean([(r.done - r.first) / (load.output - 1) for r in measured]) if load.output > 1 else 0.0
    rate = _rates(reqs, measured)
    offered = load.request_rate or 0.0
    overloaded = cut  # a closed loop cut short; an open one simulate judges by the rates
    return Served(ttft, itl, e2e, rate * load.output, rate, batch_sum / max(steps, 1), peak,
                  mean([r.admitted - r.arrival for r in measured]), len(measured), steps, overloaded, offered)
