"""The demo's workload: labelled tickets read from JSONL, pushed through a system with bounded
concurrency, each outcome (answer or error, latency) kept in ticket order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from modelyard.cost.prices import estimate_input_tokens
from modelyard.errors import ConfigError, ModelError
from modelyard.types import ChatResponse, Decision, user
from modelyard.yard import Yard


@dataclass(frozen=True, slots=True, kw_only=True)
class Ticket:
    """One support ticket: its text and, when known, its label (the intent it expresses)."""

    id: str
    text: str
    label: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What the system did with one ticket."""

    ticket: Ticket
    response: ChatResponse | None
    error: ModelError | None
    latency: float
    """Seconds from asking to the answer (or the error)."""
    input_tokens: int
    """The prompt's tokens, estimated: what any model would have had to read."""

    @property
    def decision(self) -> Decision | None:
        """The request's decision record, whether it was answered or failed."""
        if self.response is not None:
            return self.response.decision
        return self.error.decision if self.error is not None else None

    @property
    def cost(self) -> float:
        """USD the request spent, failed attempts included."""
        if self.response is not None:
            return self.response.cost
        return self.error.cost if self.error is not None else 0.0


def read_tickets(path: Path) -> list[Ticket]:
    """Tickets from a JSONL file of `{"id"?, "text", "label"?}` objects; ConfigError naming the
    line of a bad one."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the tickets: {exc.strerror}", path=str(path)) from None
    tickets: list[Ticket] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"invalid JSON: {exc}", path=str(path), line=number) from None
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(
                'expected an object with a non-empty "text"', path=str(path), line=number
            )
        label = record.get("label")
        tickets.append(
            Ticket(
                id=str(record.get("id", f"line-{number}")),
                text=text.strip(),
                label=label if isinstance(label, str) and label else None,
            )
        )
    if not tickets:
        raise ConfigError("no tickets in the file", path=str(path))
    return tickets


async def _answer(yard: Yard, system: str, ticket: Ticket) -> Outcome:
    request = user(ticket.text)
    started = time.perf_counter()
    response: ChatResponse | None = None
    error: ModelError | None = None
    try:
        response = await yard.complete(system, request)
    except ModelError as exc:
        error = exc
    return Outcome(
        ticket=ticket,
        response=response,
        error=error,
        latency=time.perf_counter() - started,
        input_tokens=estimate_input_tokens(request),
    )


async def run_workload(
    yard: Yard,
    system: str,
    tickets: Sequence[Ticket],
    *,
    concurrency: int = 4,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Ask `system` every ticket, at most `concurrency` at a time; outcomes in ticket order.
    `on_done` hears of each outcome as it arrives (a progress bar)."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    gate = asyncio.Semaphore(concurrency)

    async def one(ticket: Ticket) -> Outcome:
        async with gate:
            outcome = await _answer(yard, system, ticket)
        if on_done is not None:
            on_done(outcome)
        return outcome

    return list(await asyncio.gather(*(one(ticket) for ticket in tickets)))
