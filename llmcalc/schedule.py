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
Means are taken over the requests after the first ``concurrency`` (or the first 10%), the warm-up.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from .spec import SpecError

MAX_REQUESTS = 2000  # requests simulated at most (a rate run: about a minute of arrivals, within this)
MAX_STEPS = 200_000  # steps at most, whatever the load: the answer is then from the steps run


class StepCosts(NamedTuple):
    """Per-step cost coefficients of one serving instance (serving.step_costs), seconds."""

    dense_per_token: float  # compute seconds per token through the matmuls
    attention_per_pair: float  # compute seconds per (query, key) pair over all layers
    weights: float  # memory seconds to read the weights once
    kv_per_position: float  # memory seconds to read one position's KV over all layers
    decode_overhead: float  # layers x per-layer cost, decode-only step
    prefill_overhead: float  # layers x per-layer cost, a step with prefill
    allreduce_per_token: float  # communication seconds per token in the step
    allreduce_per_step: float  # communication latency per step

    def step(self, tokens: int, pairs: float, positions: float, prefill: bool) -> float:
        compute = self.dense_per_token * tokens + self.attention_per_pair * pairs
        memory = self.weights + self.kv_per_position * positions
        comm = self.allreduce_per_step + self.allreduce_per_token * tokens if self.allreduce_per_step else 0.0
        return max(compute, memory) + (self.prefill_overhead if prefill else self.decode_overhead) + comm


@dataclass(frozen=True)
class Load:
    """The traffic: ``concurrency`` clients in a closed loop, or Poisson arrivals at ``request_rate``
    per second; each request ``prompt`` tokens in, ``output`` out."""

    prompt: int
    output: int
    concurrency: int | None = None
    request_rate: float | None = None
    requests: int | None = None  # how many to simulate; None: enough for a steady state

    def __post_init__(self) -> None:
        if (self.concurrency is None) == (self.request_rate is None):
            raise SpecError("give one of --concurrency and --request-rate")
        if self.concurrency is not None and self.concurrency < 1:
            raise SpecError(f"--concurrency must be at least 1, got {self.concurrency}")
        if self.request_rate is not None and not 0 < self.request_rate <= 1e6:
            raise SpecError(f"--request-rate must be above 0 (requests per second), got {self.request_rate}")
        if self.prompt < 1 or self.output < 1:
            raise SpecError("--prompt and --output must be at least 1 token")


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


@dataclass
class _Request:
    arrival: float
    left: int  # prompt tokens still to prefill
    first: float = 0.0
    done: float = 0.0
    admitted: float = -1.0


def simulate(costs: StepCosts, load: Load, budget: int, max_seqs: int, kv_capacity: float) -> Served:
    """Replay the scheduler (module docstring) and return the steady-state means."""
    if load.prompt + load.output > kv_capacity:
        raise SpecError(f"one request of {load.prompt + load.output:,} tokens does not fit the KV cache "
                        f"({int(kv_capacity):,} tokens)")
    replay = _Replay(costs, load, load.requests or _enough(load), budget, max_seqs, kv_capacity)
    while replay.busy() and replay.step < MAX_STEPS:
        replay.arrive()
        replay.admit()
        if not replay.prefilling and not replay.decoding:
            if not replay.idle():
                break
            continue
        replay.run_step()
    return _means(replay.reqs, load, replay.step, replay.batch_sum, replay.peak)


class _Replay:
    """The scheduler's state between steps: who waits, who prefills, who decodes, the KV in use."""

    def __init__(self, costs: StepCosts, load: Load, n: int, budget: int, max_seqs: int, kv_capacity: float) -> None:
        self.costs, self.load, self.n, self.budget, self.max_seqs, self.kv_capacity = \
            costs, load, n, budget, max_seqs, kv_capacity
        self.arrivals = _arrivals(load, n)
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
        while self.sent < self.n and self.arrivals[self.sent] is not None and self.arrivals[self.sent] <= self.now:
            self.reqs.append(_Request(self.arrivals[self.sent], self.load.prompt))
            self.waiting.append(len(self.reqs) - 1)
            self.sent += 1

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
        self.now += self.costs.step(tokens, pairs, positions, bool(started))
        self.step += 1
        self.batch_sum += self.decoding + len(started)
        self.peak = max(self.peak, self.decoding + len(started))
        self.context += self.decoding  # each decode added a position
        while self.finishing and self.finishing[0][0] == self.step:
            self._finish(heapq.heappop(self.finishing)[1], prompt + self.load.output - 1)
        for i, chunk in started:
            self._prefilled(i, chunk)

    def _prefilled(self, i: int, chunk: int) -> None:
        r = self.reqs[i]
        r.left -= chunk
        if r.left:
            return
        self.prefilling.remove(i)
        r.first = self.now
        if self.load.output == 1:  # its one token is the first: done, never decodes
            self.decoding += 1
            self._finish(i, 0)
            return
        self.decoding += 1
        self.context += self.load.prompt
        heapq.heappush(self.finishing, (self.step + self.load.output - 1, i))

    def _finish(self, i: int, context: int) -> None:
        self.reqs[i].done = self.now
        self.decoding -= 1
        self.context -= context
        self.kv_used -= self.size
        self.scheduled = _next(self.arrivals, self.scheduled, self.now, self.load)


def _next(arrivals: list, scheduled: int, now: float, load: Load) -> int:
    """Closed loop: the client whose request just ended sends its next one now."""
    if load.concurrency is not None and scheduled < len(arrivals):
        arrivals[scheduled] = now
        return scheduled + 1
    return scheduled


def _enough(load: Load) -> int:
    if load.concurrency is not None:
        return min(MAX_REQUESTS, max(4 * load.concurrency, 40))
    return min(MAX_REQUESTS, max(200, int(load.request_rate * 60)))


def _arrivals(load: Load, n: int) -> list:
    """Arrival times: the first ``concurrency`` at 0 and the rest when a client's last request ends
    (None until then), or a seeded Poisson stream."""
    if load.concurrency is not None:
        return [0.0] * min(load.concurrency, n) + [None] * (n - min(load.concurrency, n))
    rng, t, out = random.Random(0), 0.0, []
    for _ in range(n):
        t += rng.expovariate(load.request_rate)
        out.append(t)
    return out


def _means(reqs: list[_Request], load: Load, steps: int, batch_sum: int, peak: int) -> Served:
    done = [r for r in reqs if r.done]
    warm = load.concurrency if load.concurrency is not None else len(reqs) // 10
    measured = done[warm:] if len(done) > warm + 4 else done
    if not measured:
        raise SpecError("the simulation finished no request; the load is too heavy for these GPUs")
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    ttft = mean([r.first - r.arrival for r in measured])
    e2e = mean([r.done - r.arrival for r in measured])
    itl = mean([(r.done - r.first) / (load.output - 1) for r in measured]) if load.output > 1 else 0.0
    span = max(r.done for r in measured) - min(r.arrival for r in measured)
    return Served(ttft, itl, e2e, len(measured) * load.output / span if span else 0.0,
                  len(measured) / span if span else 0.0, batch_sum / max(steps, 1), peak,
                  mean([r.admitted - r.arrival for r in measured]), len(measured), steps)
