"""A GGUF chat model running in this process on llama.cpp (SmolLM2-135M-Instruct by default).

Generation runs on the loaded model's worker thread (`llama_engine.py`); tokens cross to the
event loop one by one through `call_soon_threadsafe`, so `stream()` is real token streaming and
the loop never blocks. Concurrent requests queue and run one at a time per loaded model.

Deadlines: the worker checks `request.deadline` between prompt slices and between tokens. When
it passes, the call raises `ModelTimeoutError` (retryable) — `complete()` returns no partial
answer, and a stream that already sent text raises instead of ending as a normal finish, so a
cut answer is never taken for a whole one. Requests still queued at their deadline fail the same
way without running; one cancelled while queued never ran and costs nothing (`cost.dispatch`).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import replace

import orjson

from modelyard.cost.dispatch import Sender
from modelyard.errors import BadRequestError, ModelError, ModelTimeoutError, UnavailableError
from modelyard.local.llama_engine import (
    Done,
    Event,
    Failed,
    Finished,
    Job,
    LlamaEngine,
    Piece,
    Sampling,
)
from modelyard.model import Model, ModelInfo, elapsed_ms
from modelyard.streaming import StreamAssembler
from modelyard.types import ChatRequest, ChatResponse, Chunk, Decision, Usage

MAX_TOP_LOGPROBS = 20
MAX_CHOICES = 8


class LlamaModel(Model):
    """A chat model on llama.cpp: real token streaming, logprobs, one generation at a time."""

    def __init__(self, info: ModelInfo, engine: LlamaEngine, *, sampling: Sampling) -> None:
        self.info = info
        self.engine = engine
        self.sampling = sampling
        self._ids = itertools.count()

    def describe(self) -> dict[str, object]:
        out = super().describe()
        out["gguf"] = self.engine.name
        out["n_ctx"] = self.engine.n_ctx
        return out

    async def complete(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        assembler = StreamAssembler()
        done: Done | None = None
        async with aclosing(self._events(request, started)) as events:
            async for event in events:
                if isinstance(event, Piece | Finished):
                    assembler.add(_chunk(event))
                elif isinstance(event, Done):
                    done = event
        assert done is not None  # _events either ends with Done or raises
        return self._response(request, assembler, done, started)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        started = time.perf_counter()
        assembler = StreamAssembler()
        done: Done | None = None
        model: str | None = self.name  # on the first chunk only (`Chunk.model`)
        # Closing the events when the caller stops reading cancels the generation at once.
        async with aclosing(self._events(request, started)) as events:
            async for event in events:
                if isinstance(event, Piece | Finished):
                    chunk = _chunk(event, model)
                    model = None
                    assembler.add(chunk)
                    yield chunk
                elif isinstance(event, Done):
                    done = event
        assert done is not None
        yield Chunk(response=self._response(request, assembler, done, started))

    async def _events(self, request: ChatRequest, started: float) -> AsyncGenerator[Event]:
        """Run the request on the worker and yield its events; raise its error, with the
        decision attached, if it fails or the deadline passes."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event] = asyncio.Queue()
        cancel = threading.Event()

        def emit(event: Event) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # the loop closed under us: stop generating for nobody
                cancel.set()

        tokens = 0
        try:
            job = self._job(request)
            try:
                self.engine.submit(job, emit, cancel)
            except RuntimeError:  # the executor was shut down
                raise UnavailableError("the local model was closed", retryable=False) from None
            while True:
                left = request.remaining()
                try:
                    if left is None:
                        event = await queue.get()
                    else:
                        event = await asyncio.wait_for(queue.get(), left)
                except TimeoutError:
                    where = f"after {tokens} tokens" if tokens else "before the first token"
                    raise ModelTimeoutError(
                        f"deadline reached {where} (queued behind other requests or generating)",
                        code="deadline",
                    ) from None
                if isinstance(event, Failed):
                    tokens = max(tokens, event.output_tokens)
                    raise event.error
                if isinstance(event, Piece):
                    tokens = event.generated
                yield event
                if isinstance(event, Done):
                    return
        except ModelError as exc:
            raise self._failed(exc, started, tokens) from None
        finally:
            cancel.set()

    def _job(self, request: ChatRequest) -> Job:
        _reject_unsupported(request, self.name)
        messages: list[Mapping[str, str]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.extend({"role": m.role, "content": m.text} for m in request.messages)
        sampling = self.sampling
        if request.temperature is not None:
            sampling = replace(sampling, temperature=request.temperature)
        if request.top_p is not None:
            sampling = replace(sampling, top_p=request.top_p)
        if request.seed is not None:
            sampling = replace(sampling, seed=request.seed)
        return Job(
            messages=messages,
            max_tokens=request.max_tokens or self.info.capabilities.max_output_tokens,
            sampling=sampling,
            stop=tuple(s for s in request.stop if s),  # "" would stop before the first token
            n=request.n,
            logprobs=request.logprobs,
            top_logprobs=min(request.top_logprobs or 0, MAX_TOP_LOGPROBS),
            grammar=_grammar(request),
            deadline=request.deadline,
            started=Sender(),
        )

    def _response(
        self, request: ChatRequest, assembler: StreamAssembler, done: Done, started: float
    ) -> ChatResponse:
        usage = Usage(
            input_tokens=done.input_tokens,
            output_tokens=done.output_tokens,
            cached_tokens=done.cached_tokens,
        )
        cost = self.info.price.cost(usage)
        speed = done.output_tokens / done.generation_s if done.generation_s > 0 else 0.0
        details: dict[str, object] = {
            "cached_tokens": done.cached_tokens,
            "prompt_ms": round(done.prompt_s * 1000, 1),
            "tokens_per_second": round(speed, 1),
        }
        decision = Decision(
            node=self.name,
            kind="model",
            chosen=self.engine.name,
            reason="answered",
            latency_ms=elapsed_ms(started),
            cost=cost,
            details=details,
            usage=usage,
        )
        return ChatResponse(
            id=f"llama-{next(self._ids)}",
            model=self.name,
            provider_model=self.engine.name,
            choices=assembler.choices(logprobs=request.logprobs),
            usage=usage,
            cost=cost,
            created=int(time.time()),
            decision=decision,
        )

    def _failed(self, exc: ModelError, started: float, tokens: int) -> ModelError:
        exc.model = exc.model or self.name
        exc.provider = exc.provider or "local"
        decision = Decision(
            node=self.name,
            kind="model",
            reason="failed",
            latency_ms=elapsed_ms(started),
            error=f"{exc.kind}: {exc.message}",
            details={"output_tokens": tokens},
        )
        return exc.with_decision(decision)


def _chunk(event: Piece | Finished, model: str | None = None) -> Chunk:
    if isinstance(event, Piece):
        return Chunk(index=event.index, text=event.text, logprobs=event.logprobs, model=model)
    return Chunk(index=event.index, finish_reason=event.reason, model=model)


def _reject_unsupported(request: ChatRequest, name: str) -> None:
    """Refuse what this model cannot do, loudly, instead of answering something else."""
    problem = None
    if request.tools and request.tool_choice != "none":
        problem = "tool calling is not supported by this local model"
    elif any(m.role == "tool" or m.tool_calls for m in request.messages):
        problem = "tool messages are not supported by this local model"
    elif any(m.has_image for m in request.messages):
        problem = "images are not supported by this local model"
    elif not 1 <= request.n <= MAX_CHOICES:
        problem = f"n must be between 1 and {MAX_CHOICES} for a local model, got {request.n}"
    elif request.max_tokens is not None and request.max_tokens < 1:
        problem = f"max_tokens must be at least 1, got {request.max_tokens}"
    if problem is not None:
        raise BadRequestError(problem, model=name, provider="local", code="unsupported")


def _grammar(request: ChatRequest) -> str | None:
    """The GBNF grammar for the request's JSON mode, or None for plain text."""
    response_format = request.response_format
    if response_format is None or response_format.type == "text":
        return None
    from modelyard.local.runtime import require

    grammars = require("llama_cpp.llama_grammar", purpose="JSON mode")
    if response_format.type == "json_schema" and response_format.schema is not None:
        try:
            return str(grammars.json_schema_to_gbnf(orjson.dumps(response_format.schema).decode()))
        except Exception as exc:  # the converter raises plain errors on schemas it cannot map
            raise BadRequestError(
                f"cannot turn the JSON schema into a grammar: {exc}",
                provider="local",
                code="unsupported_schema",
            ) from None
    return str(grammars.JSON_GBNF)
