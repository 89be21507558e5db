"""Load and cost test: a system under a steady request rate, and what that traffic costs.

Requests leave on a fixed schedule, `rate` a second, whether or not earlier ones have answered
(open loop): a system that cannot keep up shows as latency growing with the backlog, as it would
in production, instead of as a politely lower rate (a closed loop, N workers each waiting for its
answer, hides exactly that: "coordinated omission"). Latency is measured from each request's
scheduled time. Prompts cycle through the items given. The run ends after `requests`, or
`duration` seconds, or before the request that could take its spend past `max_cost`; requests
already sent are awaited. Near the cap sending waits for answers rather than overshoot it: a
request, out or next, counts at what its prompt cost when last answered, or at its worst case
until then (prompts can differ in cost a hundredfold, so no run-wide mean stands for them).
What was spent, per request and per billed model, is projected to a daily volume and set
against the config's total, system and model budgets.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from modelyard.config.operations import BudgetSpec
from modelyard.cost.accounting import spend_rows
from modelyard.cost.bounds import cost_bound
from modelyard.demo.summary import percentile
from modelyard.errors import ModelError
from modelyard.model import Model
from modelyard.types import ChatRequest, ChatResponse

WINDOW_DAYS = {"minute": 1 / 1440, "hour": 1 / 24, "day": 1.0, "month": 30.0}
"""Each calendar budget window in days (a month taken as 30); `fixed` windows are not
projected."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One request of the run."""

    latency_ms: float
    """From its scheduled send time (or, if it waited for the spend cap, from when the cap let
    it go) to its answer or error."""
    cost: float
    answered_by: str | None
    error: str | None
    """The error's kind when it failed."""
    billed: dict[str, float]
    """USD by model called (a cascade's checks and failed attempts included)."""
    late_ms: float = 0.0
    """From its scheduled send time (or its release by the spend cap) to when it was sent: how
    far this process (its event loop busy with other work) fell behind."""


@dataclass(frozen=True, slots=True)
class Projection:
    """One budget against the run's spend, projected to the daily volume."""

    budget: str
    window: str
    limit: float
    projected: float
    """USD a window of that traffic would spend in what the budget counts, at the daily volume
    spread evenly."""
    at_rate: float | None = None
    """For minute and hour windows: USD a window spends at the run's own rate (a burst at that
    rate fills a short window however small the daily average)."""

    @property
    def share(self) -> float:
        return self.projected / self.limit

    @property
    def share_at_rate(self) -> float | None:
        return None if self.at_rate is None else self.at_rate / self.limit


@dataclass(slots=True)
class LoadReport:
    """What a load run sent, how it was answered, and what it cost."""

    system: str
    rate: float
    samples: list[Sample]
    seconds: float
    """From the first scheduled send to the last answer."""
    stopped: str
    """Why sending ended: `requests`, `duration` or `max_cost`."""
    shed: int = 0
    """Requests not sent because `max_in_flight` were already waiting (the run's own limit)."""
    projections: list[Projection] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return len(self.samples)

    @property
    def errors(self) -> Counter[str]:
        return Counter(s.error for s in self.samples if s.error is not None)

    @property
    def answered_by(self) -> Counter[str]:
        return Counter(s.answered_by for s in self.samples if s.answered_by is not None)

    @property
    def throughput(self) -> float:
        """Answers a second (failures are not throughput)."""
        answered = self.sent - sum(self.errors.values())
        return answered / self.seconds if self.seconds else 0.0

    @property
    def cost(self) -> float:
        return sum(s.cost for s in self.samples)

    @property
    def cost_per_request(self) -> float:
        return self.cost / self.sent if self.sent else 0.0

    @property
    def billed(self) -> dict[str, float]:
        """USD by model over the run."""
        total: dict[str, float] = {}
        for sample in self.samples:
            for model, spent in sample.billed.items():
                total[model] = total.get(model, 0.0) + spent
        return total

    def latency(self, q: float) -> float:
        """The q-th percentile of latency, ms, over every request (failed ones too)."""
        return percentile([s.latency_ms for s in self.samples], q)

    def late(self, q: float) -> float:
        """The q-th percentile of how late requests were sent, ms (see `Sample.late_ms`)."""
        return percentile([s.late_ms for s in self.samples], q)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready summary."""
        return {
            "system": self.system,
            "rate": self.rate,
            "sent": self.sent,
            "shed": self.shed,
            "stopped": self.stopped,
            "seconds": round(self.seconds, 3),
            "throughput": self.throughput,
            "errors": dict(self.errors),
            "answered_by": dict(self.answered_by),
            "latency_ms": {f"p{q}": round(self.latency(q), 3) for q in (50, 90, 99, 100)},
            "late_ms": {f"p{q}": round(self.late(q), 3) for q in (50, 99, 100)},
            "cost": self.cost,
            "cost_per_request": self.cost_per_request,
            "billed": self.billed,
            "projections": [
                {
                    "budget": p.budget,
                    "window": p.window,
                    "limit": p.limit,
                    "projected": p.projected,
                    "share": p.share,
                    "at_rate": p.at_rate,
                    "share_at_rate": p.share_at_rate,
                }
                for p in self.projections
            ],
        }


def _sample(
    request: ChatRequest,
    started: float,
    late: float,
    response: ChatResponse | None = None,
    error: ModelError | None = None,
) -> Sample:
    latency = (time.perf_counter() - started) * 1000
    # What each model billed, as the spend ledger counts it.
    billed = {row.model: row.cost for row in spend_rows("load", request, response, error)}
    if response is not None:
        return Sample(latency, response.cost, response.model, None, billed, late * 1000)
    assert error is not None
    return Sample(latency, error.cost, None, error.kind, billed, late * 1000)


async def run_load(
    system: Model,
    requests: Sequence[ChatRequest],
    *,
    rate: float,
    total: int | None = None,
    duration: float | None = None,
    max_cost: float | None = None,
    max_in_flight: int = 1000,
    deadline: float | None = None,
) -> LoadReport:
    """Send `requests` (cycled) to `system` at `rate` a second; see the module docstring.
    `deadline` is seconds each request may take from its send (the config's default_deadline)."""
    if not requests:
        raise ValueError("no requests to send")
    if total is None and duration is None:
        raise ValueError("give a number of requests or a duration")
    samples: list[Sample] = []
    sent: list[asyncio.Task[None]] = []  # all of them: a bug's exception reaches the caller
    in_flight: set[asyncio.Task[None]] = set()
    spent = 0.0
    expected = _Expected(system, requests, deadline)
    last = 0.0  # when the last answer came (the run may stop a wait after it)
    shed = 0
    stopped = "requests"

    async def one(request: ChatRequest, index: int, counted: float, scheduled: float) -> None:
        nonlocal spent, last
        late = time.perf_counter() - scheduled
        try:
            sample = _sample(request, scheduled, late, response=await system.complete(request))
        except ModelError as exc:
            sample = _sample(request, scheduled, late, error=exc)
        spent += sample.cost
        expected.answered(index, counted, sample)
        samples.append(sample)
        last = time.perf_counter()

    begin = time.perf_counter()
    paused = 0.0  # seconds sending waited for the spend cap: the schedule moves on by them
    number = 0
    while total is None or number < total:
        offset = number / rate  # `begin + offset - begin` can fall short of `offset`
        scheduled = begin + paused + offset
        if duration is not None and paused + offset >= duration:  # wall seconds of sending
            stopped = "duration"
            break
        # Behind schedule the wait is 0, and still yields: the requests sent start at once
        # instead of piling up behind the sender.
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        index = number % len(requests)
        if max_cost is not None:
            held = False
            # Near the cap, sending waits for answers instead of overshooting, and stops when
            # the next request alone would pass it.
            while in_flight and spent + expected.out + expected.of(index) > max_cost:
                await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                held = True
            if held:  # the cap, not the system, held it: this and later sends start later
                now = time.perf_counter()
                if duration is not None and now - begin >= duration:
                    stopped = "duration"  # the run ended while sending waited for answers
                    break
                paused += max(0.0, now - scheduled)
                scheduled = begin + paused + offset
            # Never past the cap: a prompt no answer has priced yet counts at its worst case
            # here too, so a run whose cap is below one request's worst case sends nothing.
            if spent >= max_cost or spent + expected.of(index) > max_cost:
                stopped = "max_cost"
                break
        if len(in_flight) >= max_in_flight:
            shed += 1
        else:
            request = requests[index].with_budget(deadline)
            counted = expected.sent(index)
            task = asyncio.create_task(one(request, index, counted, scheduled))
            sent.append(task)
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        number += 1
    await asyncio.gather(*sent)
    return LoadReport(
        system=system.name,
        rate=rate,
        samples=samples,
        seconds=max(last - begin, 0.0),
        stopped=stopped,
        shed=shed,
    )


class _Expected:
    """What each prompt is expected to cost, and the sum over the requests still out.

    A prompt counts at what it cost when last answered (or failed at a cost), else at its worst
    case. Failures that cost nothing (a 429, a refused connection) say nothing of what it will
    cost once the system answers. The sum is kept as requests leave and return, not summed
    afresh at each send: at thousands of requests a second that would make sending fall behind.
    """

    def __init__(
        self, system: Model, requests: Sequence[ChatRequest], deadline: float | None
    ) -> None:
        self._system = system
        self._requests = requests
        self._deadline = deadline
        self._cost: dict[int, float] = {}
        self._bound: dict[int, float] = {}
        self.out = 0.0
        """The expected cost of the requests still out."""

    def known(self, index: int) -> bool:
        """Whether prompt `index` was priced by an answer."""
        return index in self._cost

    def of(self, index: int) -> float:
        """What the next request with prompt `index` is expected to cost."""
        if index in self._cost:
            return self._cost[index]
        if index not in self._bound:
            request = self._requests[index].with_budget(self._deadline)
            self._bound[index] = cost_bound(self._system, request)
        return self._bound[index]

    def sent(self, index: int) -> float:
        """A request with prompt `index` left: it counts as out, at what this returns, until
        `answered`."""
        each = self.of(index)
        self.out += each
        return each

    def answered(self, index: int, counted: float, sample: Sample) -> None:
        """A request with prompt `index`, counted at `counted`, came back as `sample`."""
        self.out -= counted
        if sample.error is None or sample.cost > 0:
            self._cost[index] = sample.cost


def project(report: LoadReport, budgets: Sequence[BudgetSpec], daily: int) -> list[Projection]:
    """The budgets that count this system's spend (total, this system, a model it bills), each
    against `daily` requests a day of the run's traffic, and minute and hour budgets also against
    the run's own rate."""
    if not report.sent:
        return []
    per_request = report.cost_per_request
    by_model = {m: cost / report.sent for m, cost in report.billed.items()}
    found = []
    for budget in budgets:
        days = WINDOW_DAYS.get(budget.window)
        if days is None:
            continue
        if budget.scope == "total" or (
            budget.scope == "system" and budget.selector in ("*", report.system)
        ):
            each = per_request
        elif budget.scope == "model" and budget.selector in by_model:
            each = by_model[budget.selector]
        else:
            continue
        at_rate = each * report.rate * days * 86_400 if days < 1 else None
        found.append(
            Projection(budget.name, budget.window, budget.limit, each * daily * days, at_rate)
        )
    return found
