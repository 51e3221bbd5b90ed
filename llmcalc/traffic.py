"""The traffic a serving replay runs (schedule.py): the load, when its requests arrive, how many to replay and
which of them to measure."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .spec import SpecError

if TYPE_CHECKING:
    from .schedule import StepCosts

MAX_REQUESTS = 12_000  # requests simulated at most (a rate run: about a minute of arrivals, within this)
MAX_CLIENTS = MAX_REQUESTS // 6  # closed loop: a warm-up, a window of 4 x the clients and a wind-down must fit


@dataclass(frozen=True)
class Load:
    """The traffic: ``concurrency`` clients in a closed loop, or Poisson arrivals at ``request_rate``
    per second; each request ``prompt`` tokens in, ``output`` out."""

    prompt: int
    output: int
    concurrency: int | None = None
    request_rate: float | None = None

    def __post_init__(self) -> None:
        if (self.concurrency is None) == (self.request_rate is None):
            raise SpecError("give one of --concurrency and --request-rate")
        if self.concurrency is not None and not 1 <= self.concurrency <= MAX_CLIENTS:
            raise SpecError(f"--concurrency must be between 1 and {MAX_CLIENTS:,} clients (a steady state of more is "
                            f"not replayed; give their arrival rate, --request-rate), got {self.concurrency}")
        if self.request_rate is not None and not 0 < self.request_rate <= 1e5:
            raise SpecError(f"--request-rate must be above 0 and at most 100,000 requests per second, got "
                            f"{self.request_rate:g}")
        if self.prompt < 1 or self.output < 1:
            raise SpecError("--prompt and --output must be at least 1 token")


def load_of(prompt: int, output: int, concurrency: int | None, request_rate: float | None) -> Load | None:
    """The traffic ``latency`` was given: a Load, or None for one request at a time (or --batch together)."""
    if concurrency is None and request_rate is None:
        return None
    return Load(prompt, max(output, 1), concurrency, request_rate)


def enough(load: Load) -> int:
    """A warm-up, a window to measure and a wind-down: closed loop, the first and last ``concurrency``
    requests around 4 x as many (at least 100); open loop, a minute of arrivals (at least 200)."""
    if load.concurrency is not None:
        return min(MAX_REQUESTS, 2 * load.concurrency + max(4 * load.concurrency, 100))
    return min(MAX_REQUESTS, max(200, int(load.request_rate * 60)))


def arrivals(load: Load, n: int, costs: "StepCosts", budget: int) -> list:
    """Arrival times. Closed loop: the clients' first requests spread evenly over one request's time alone (_alone),
    the rest when a client's last request ends (None until then). Open loop: a seeded Poisson stream (the same
    answer every run). Clients started together would run in lockstep, identical requests prefilling together
    every time they return (TTFT 2-3x at a few clients, and not monotone in them); a real run's clients drift
    apart (the frontend takes requests one at a time, lengths and step times vary). Spread evenly, they keep the
    phases furthest apart, with no seed to choose them: a prompt waits for another only once they must."""
    if load.concurrency is not None:
        first = min(load.concurrency, n)
        cycle = _alone(costs, load, budget)
        return [k * cycle / first for k in range(first)] + [None] * (n - first)
    import random  # only an open-loop replay draws arrivals (about 1 ms of every `latency` call's start-up)

    rng, t, out = random.Random(0), 0.0, []
    for _ in range(n):
        t += rng.expovariate(load.request_rate)
        out.append(t)
    return out


def _alone(costs: "StepCosts", load: Load, budget: int) -> float:
    """About one request's time with the engine to itself: its prompt in budget-sized chunks, then a decode step for
    each further token."""
    seconds, done = 0.0, 0
    while done < load.prompt:
        chunk = min(budget, load.prompt - done)
        seconds += costs.step(chunk, done * chunk + chunk * (chunk + 1) / 2, done, True, 1)
        done += chunk
    return seconds + (load.output - 1) * costs.step(1, load.prompt, load.prompt, False, 1)


def window(reqs: list, load: Load, n: int) -> list:
    """The requests measured, in arrival order: closed loop, without the first and last ``concurrency``
    (the start-up burst, the wind-down once sends stop); open loop, those arriving after the first
    10% have ended (the system has filled) and before the last 10% arrive."""
    if load.concurrency is not None:
        edge = load.concurrency
        return reqs[edge:n - edge] if n - 2 * edge >= 20 else reqs[:n]
    early = [r.done for r in reqs[:n // 10] if r.done]
    filled = max(early) if len(early) == n // 10 and early else float("inf")
    last = reqs[-1 - n // 10].arrival if len(reqs) > n // 10 else 0.0
    return [r for r in reqs if filled <= r.arrival <= last]


def per_instance(load: Load, instances: int) -> Load:
    """One instance's share of the traffic: C clients over D instances is ceil(C/D) each; a Poisson
    stream split at random is Poisson at rate/D."""
    if instances == 1:
        return load
    return dataclasses.replace(load, concurrency=-(-load.concurrency // instances) if load.concurrency else None,
                               request_rate=load.request_rate / instances if load.request_rate else None)
