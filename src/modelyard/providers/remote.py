"""The adapter for every hosted model: a wire format plus an endpoint plus the HTTP transport.

One class serves OpenAI, Anthropic, Gemini and every OpenAI-compatible server; what differs
between them is data (the endpoint) and pure functions (the wire format).

What of a request a model takes (thinking, effort, context management, later system messages)
is decided in `request_fit.py`; the first drop of each field on a model is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from modelyard.cost.prices import (
    estimate_embedding_tokens,
    estimate_input_tokens,
    estimate_tokens,
    unanswered_embedding,
)
from modelyard.errors import (
    BadResponseError,
    ModelError,
    ModelTimeoutError,
    StreamInterruptedError,
    redact,
)
from modelyard.model import Embedder, Model, ModelInfo, elapsed_ms
from modelyard.providers import upstream_quota
from modelyard.providers.headers import RateLimitInfo
from modelyard.providers.http import HttpClient, HttpReply
from modelyard.providers.pinning import drift
from modelyard.providers.request_fit import (
    CONTEXT_MANAGEMENT_DROPPED as CONTEXT_MANAGEMENT_DROPPED,
)
from modelyard.providers.request_fit import THINKING_DROPPED as THINKING_DROPPED
from modelyard.providers.request_fit import fit
from modelyard.providers.sse import Event
from modelyard.providers.wire import (
    AnswerCheck,
    ArrayStream,
    BodyHeaders,
    EmbeddingWireFormat,
    ParsedResponse,
    TokenCountWireFormat,
    WireFormat,
    bad_body,
)
from modelyard.streaming import StreamAssembler, response_chunks
from modelyard.types import (
    ChatRequest,
    ChatResponse,
    Choice,
    Chunk,
    Decision,
    EmbeddingRequest,
    EmbeddingResponse,
    Usage,
)

log = logging.getLogger("modelyard.providers")

RateLimitListener = Callable[[RateLimitInfo], None]

SETTLE_S = 1.0
"""Seconds to wait for a stream's trailing events (usage, end marker) once every choice has
finished, before finishing without them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """Where a provider lives and how to authenticate: config, not code."""

    provider: str
    base_url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    """Every header to send, auth included (built once from config)."""
    query: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    """Values to scrub from any error message (the API key)."""


class RemoteModel(Model):
    """A hosted model behind an HTTP API."""

    def __init__(
        self,
        info: ModelInfo,
        *,
        endpoint: Endpoint,
        wire: WireFormat,
        client: HttpClient,
    ) -> None:
        self.info = info
        self.endpoint = endpoint
        self.wire = wire
        self.client = client
        self.rate_limit_listeners: list[RateLimitListener] = []
        self._drift_seen: set[str] = set()
        """Reported model ids already warned about (the warning is logged once per id)."""
        self._told: set[str] = set()
        """The fields whose drop has been logged (once per field per model)."""
        self._unstreamed_told = False
        """Whether a whole answer to a stream request has been logged (once per model)."""
        model_id = info.model_id or info.name
        self._model_id = model_id
        # `{model}` in a base URL (Azure: .../openai/deployments/{model}) is the model's id.
        base_url = endpoint.base_url.replace("{model}", model_id)
        self._url = {
            stream: _with_query(wire.url(base_url, model_id, stream=stream), endpoint.query)
            for stream in (False, True)
        }
        self._headers = {**wire.default_headers(), **endpoint.headers}
        self._default_max_tokens = (
            info.capabilities.max_output_tokens if wire.requires_max_tokens else None
        )

    def _body(self, request: ChatRequest, *, stream: bool) -> tuple[bytes, Mapping[str, str]]:
        """The request's body, and the headers to send it with."""
        if self._default_max_tokens is not None and request.max_tokens is None:
            request = replace(request, max_tokens=self._default_max_tokens)
        body = self.wire.to_wire(request, self._model_id, stream=stream)
        return orjson.dumps(body), self._headers_for(body)

    def _headers_for(self, body: Mapping[str, Any]) -> Mapping[str, str]:
        """The default headers, and those this body needs (a header the config also sets,
        such as `anthropic-beta`, gets both values, comma-separated)."""
        if not isinstance(self.wire, BodyHeaders):
            return self._headers
        extra = self.wire.body_headers(body)
        if not extra:
            return self._headers
        headers = dict(self._headers)
        for name, value in extra.items():
            have = next((k for k in headers if k.lower() == name.lower()), None)
            headers[have or name] = f"{headers[have]},{value}" if have else value
        return headers

    def _check(self, request: ChatRequest, choices: Sequence[Choice]) -> None:
        """The wire format's own check of a whole answer (`AnswerCheck`), if it has one."""
        if isinstance(self.wire, AnswerCheck):
            self.wire.check_answer(request, choices)

    def _takes(self, request: ChatRequest) -> tuple[ChatRequest, dict[str, str]]:
        """`request` as this model takes it, and what was dropped from it (`request_fit.fit`),
        the first drop of each field logged."""
        request, dropped = fit(
            request,
            self.info.capabilities,
            unsent=self.wire.unsent,
        )
        for name, why in dropped.items():
            if name not in self._told:
                self._told.add(name)
                log.warning("model %s: %s %s", self.name, name, why)
        return request, dropped

    async def complete(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        request, dropped = self._takes(request)
        body, headers = self._body(request, stream=False)
        try:
            reply = await self.client.post(
                self._url[False],
                headers=headers,
                body=body,
                deadline_left=request.remaining(),
            )
            self._observe(reply.headers)
            parsed = self._answer(request, reply)
        except ModelError as exc:
            if isinstance(exc, ModelTimeoutError) and exc.request_sent:
                self._bill(exc, _unanswered(request))
            raise self._failed(exc, started) from None
        return self._response(parsed, started, dropped)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        started = time.perf_counter()
        request, dropped = self._takes(request)
        body, headers = self._body(request, stream=True)
        assembler = StreamAssembler()
        decoder = self.wire.stream_decoder()
        first = True
        try:
            async with self.client.stream(
                self._url[True],
                headers=headers,
                body=body,
                deadline_left=request.remaining(),
            ) as reply:
                self._observe(reply.headers)
                if reply.status >= 400:
                    payload = await reply.body(self.client.timeouts.total)
                    raise upstream_error(self.wire, reply.status, reply.headers, payload)
                if _not_a_stream(reply.headers):
                    payload = await reply.body(self.client.timeouts.total)
                    array = _array_events(self.wire, reply.headers, payload)
                    if array is None and _json_type(reply.headers):
                        # The server ignored `stream: true` (some vLLM, Ollama and proxy
                        # setups do): its whole answer, streamed on as a stream would carry it.
                        whole = HttpReply(status=reply.status, headers=reply.headers, body=payload)
                        parsed = self._answer(request, whole)
                        self._tell_unstreamed(_WHOLE)
                        for chunk in response_chunks(self._response(parsed, started, dropped)):
                            yield chunk
                        return
                    if array is None:
                        raise _refusal(self.wire, payload) or bad_body(
                            reply.status,
                            payload,
                            "upstream answered a stream request "
                            f"with {reply.headers.get('content-type')}",
                        )
                    # The stream's events in one JSON array (Gemini's as if without alt=sse):
                    # read as the events they are.
                    self._tell_unstreamed(_ARRAY)
                    events = _replay(array)
                else:
                    events = reply.events(request.remaining())
                heard = False
                try:
                    async for event in events:
                        heard = True
                        for chunk in decoder.feed(event):
                            assembler.add(chunk)
                            if first:  # names the model answering (`Chunk.model`), and
                                # the prompt's tokens if the provider told them already
                                first = False
                                chunk = replace(chunk, model=self.name, usage=decoder.usage)
                            yield chunk
                        if decoder.done:
                            break
                        if assembler.finished:
                            # Only the terminal event (usage, [DONE]) is left: wait for it
                            # briefly, not for the whole stall limit.
                            reply.settle = min(SETTLE_S, self.client.timeouts.stall)
                except ModelTimeoutError:
                    # Silence after every choice finished only holds back the terminal event;
                    # the answer is whole, so finish it below.
                    if not _whole(assembler, request.n):
                        raise
            if not heard:
                raise bad_body(
                    reply.status,
                    reply.head,
                    "upstream answered a stream request with no events "
                    f"({reply.headers.get('content-type') or 'no content-type'})",
                )
            if not decoder.done and not assembler.finished:
                raise StreamInterruptedError(
                    "stream ended before every choice finished; the answer is incomplete",
                    code="stream_incomplete",
                )
            # Every choice finished but the terminal event (usage, [DONE]) never came, or was
            # late by SETTLE_S: the answer is whole, so finish now, with the usage the stream
            # reported if any, rather than wait or fail.
            choices = assembler.choices(logprobs=request.logprobs)
            if decoder.stop_sequence is not None:  # only APIs of one choice name it
                choices = (replace(choices[0], stop_sequence=decoder.stop_sequence), *choices[1:])
            parsed = ParsedResponse(
                id=decoder.response_id or "",
                provider_model=decoder.provider_model or self._model_id,
                choices=choices,
                usage=_completed(decoder.usage, request, assembler.text),
            )
            self._check(request, parsed.choices)
        except ModelError as exc:
            # A provider bills a stream that generated something; a refusal (an error status,
            # a reset before the answer, an error event before any content) costs nothing.
            if assembler.saw_content or decoder.usage is not None:
                self._bill(exc, _completed(None, request, assembler.text))
            elif isinstance(exc, ModelTimeoutError) and exc.request_sent:
                self._bill(exc, _unanswered(request))
            raise self._failed(exc, started) from None
        yield Chunk(response=self._response(parsed, started, dropped))

    def _answer(self, request: ChatRequest, reply: HttpReply) -> ParsedResponse:
        """A whole answer's reply read, checked, and its usage completed; an answer that cannot
        be used raises all the same, billed at an estimate."""
        decoded = _json_of(reply, self.wire)
        try:
            parsed = self.wire.from_wire(decoded)
            self._check(request, parsed.choices)
        except BadResponseError as exc:
            # The provider generated (and bills) this answer even though it cannot be
            # used: estimate what it cost rather than record nothing. (An error object
            # sent with a 200, as some proxies do, is a refusal: it raises another class
            # and costs nothing.)
            self._bill(
                exc,
                Usage(
                    input_tokens=estimate_input_tokens(request),
                    output_tokens=estimate_tokens(reply.body.decode("utf-8", "replace")),
                    estimated=True,
                ),
            )
            raise
        text = "".join(choice.message.text for choice in parsed.choices)
        return replace(parsed, usage=_completed(parsed.usage, request, text))

    def _tell_unstreamed(self, how: str) -> None:
        """Log, once for this model, that its server answers a stream request `how`
        (`_WHOLE`, `_ARRAY`) rather than as a stream."""
        if not self._unstreamed_told:
            self._unstreamed_told = True
            log.info("model %s: the server %s", self.name, how)

    @property
    def counts_tokens(self) -> bool:
        """Whether the provider's API counts a prompt's tokens itself (Anthropic's count_tokens)."""
        return isinstance(self.wire, TokenCountWireFormat)

    async def count_tokens(self, request: ChatRequest) -> int:
        """The provider's own count of the input tokens `request` takes (free: nothing is
        generated or billed); ModelError when it refuses or fails. Only if `counts_tokens`."""
        wire = self.wire
        assert isinstance(wire, TokenCountWireFormat)
        base_url = self.endpoint.base_url.replace("{model}", self._model_id)
        url = _with_query(wire.count_tokens_url(base_url), self.endpoint.query)
        request, _ = self._takes(request)  # count what a call would send
        try:
            counted = wire.count_tokens_to_wire(request, self._model_id)
            reply = await self.client.post(
                url,
                headers=self._headers_for(counted),
                body=orjson.dumps(counted),
                deadline_left=request.remaining(),
            )
            upstream_quota.noted(reply.headers)
            return wire.count_tokens_from_wire(_json_of(reply, wire))
        except ModelError as exc:
            raise _scrubbed(exc, self.name, self.endpoint) from None

    def _bill(self, exc: ModelError, usage: Usage) -> None:
        """`exc` carrying what its call is estimated to have used, and what that costs."""
        exc.usage = usage
        exc.cost = self.info.price.cost(usage)

    def _observe(self, headers: Mapping[str, str]) -> None:
        upstream_quota.noted(headers)
        if self.rate_limit_listeners:
            info = self.wire.rate_limits(headers)
            if not info.empty:
                for listener in self.rate_limit_listeners:
                    listener(info)

    def _response(
        self, parsed: ParsedResponse, started: float, dropped: Mapping[str, str] | None = None
    ) -> ChatResponse:
        cost = self.info.price.cost(parsed.usage)
        details: dict[str, object] = {"provider": self.endpoint.provider}
        if dropped:
            details.update(dropped)
        if parsed.provider_model != self._model_id:
            problem = drift(self._model_id, parsed.provider_model)
            if problem is not None:
                details["model_drift"] = problem
                if parsed.provider_model not in self._drift_seen:
                    self._drift_seen.add(parsed.provider_model)
                    log.warning("model %s: %s", self.name, problem)
        decision = Decision(
            node=self.name,
            kind="model",
            chosen=parsed.provider_model,
            reason="answered",
            latency_ms=elapsed_ms(started),
            cost=cost,
            details=details,
            usage=parsed.usage,
        )
        return ChatResponse(
            id=parsed.id,
            model=self.name,
            provider_model=parsed.provider_model,
            choices=parsed.choices,
            usage=parsed.usage,
            cost=cost,
            created=parsed.created or int(time.time()),
            decision=decision,
            system_fingerprint=parsed.system_fingerprint,
        )

    def _failed(self, exc: ModelError, started: float) -> ModelError:
        _scrubbed(exc, self.name, self.endpoint)
        details: dict[str, object] = {"provider": self.endpoint.provider, "status": exc.status}
        decision = Decision(
            node=self.name,
            kind="model",
            reason="failed",
            latency_ms=elapsed_ms(started),
            cost=exc.cost,
            error=f"{exc.kind}: {exc.message}",
            details=details,
            usage=exc.usage,  # billed all the same: the tokens its cost is estimated from
        )
        return exc.with_decision(decision)

    async def aclose(self) -> None:
        await self.client.aclose()


class RemoteEmbedder(Embedder):
    """A hosted embedding model behind an HTTP API."""

    def __init__(
        self,
        info: ModelInfo,
        *,
        endpoint: Endpoint,
        wire: EmbeddingWireFormat,
        errors: WireFormat,
        client: HttpClient,
    ) -> None:
        self.info = info
        self.endpoint = endpoint
        self.wire = wire
        self.errors = errors
        self.client = client
        model_id = info.model_id or info.name
        self._model_id = model_id
        base_url = endpoint.base_url.replace("{model}", model_id)
        self._url = _with_query(wire.embeddings_url(base_url, model_id), endpoint.query)
        self._headers = {**errors.default_headers(), **endpoint.headers}

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        body = orjson.dumps(self.wire.embeddings_to_wire(request, self._model_id))
        try:
            reply = await self.client.post(
                self._url, headers=self._headers, body=body, deadline_left=request.remaining()
            )
            upstream_quota.noted(reply.headers)
            parsed = self.wire.embeddings_from_wire(_json_of(reply, self.errors))
        except ModelError as exc:
            if isinstance(exc, ModelTimeoutError) and exc.request_sent:
                # Received and never answered: the provider bills the texts all the same.
                exc.usage = unanswered_embedding(request)
                exc.cost = self.info.price.cost(exc.usage)
            raise _scrubbed(exc, self.name, self.endpoint) from None
        if len(parsed.vectors) != len(request.inputs):
            raise BadResponseError(
                f"asked for {len(request.inputs)} embeddings, got {len(parsed.vectors)}",
                model=self.name,
                provider=self.endpoint.provider,
            )
        usage = parsed.usage
        if usage.estimated and not usage.input_tokens:
            # Some APIs (Gemini) report no usage for embeddings: estimate it from the inputs.
            usage = replace(usage, input_tokens=estimate_embedding_tokens(request))
        return EmbeddingResponse(
            model=self.name,
            provider_model=parsed.provider_model or self._model_id,
            vectors=parsed.vectors,
            usage=usage,
            cost=self.info.price.cost(usage),
        )

    async def aclose(self) -> None:
        await self.client.aclose()


def upstream_error(
    wire: WireFormat, status: int, headers: Mapping[str, str], body: bytes
) -> ModelError:
    """The provider's error reply read by its `wire`, with the status it came with kept as
    `upstream_status` (a trace's try names it)."""
    error = wire.error_from_wire(status, headers, body)
    error.upstream_status = status
    return error


_WHOLE = "ignores stream: true and answers whole; each answer is streamed on in one piece"
_ARRAY = (
    "answers a stream request with one JSON array of its events, not SSE; each answer is "
    "streamed on when the array has arrived"
)


def _array_events(wire: WireFormat, headers: Mapping[str, str], body: bytes) -> list[Event] | None:
    """The stream events a JSON answer to a stream request holds in one array, for a wire
    format whose stream may come so (`ArrayStream`); None for any other answer."""
    if isinstance(wire, ArrayStream) and _json_type(headers):
        return wire.array_events(body)
    return None


async def _replay(events: list[Event]) -> AsyncIterator[Event]:
    """`events`, as a stream's."""
    for event in events:
        yield event


def _json_of(reply: HttpReply, errors: WireFormat) -> Any:
    """A whole reply's JSON body: the provider's error (read by `errors`) for a 4xx or 5xx,
    BadResponseError for a body that is not JSON."""
    if reply.status >= 400:
        raise upstream_error(errors, reply.status, reply.headers, reply.body)
    try:
        return orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        raise bad_body(reply.status, reply.body, "upstream answered with non-JSON") from None


def _refusal(wire: WireFormat, body: bytes) -> ModelError | None:
    """The provider's error when `body`, a JSON answer to a stream request, is its error object
    (some proxies and OpenAI-compatible servers refuse a stream so, with a 200): the error a
    whole answer's body would raise, so a stream fails over or retries as a whole answer does.
    None for anything else."""
    try:
        wire.from_wire(orjson.loads(body))
    except BadResponseError:
        return None
    except ModelError as exc:
        return exc
    except orjson.JSONDecodeError:
        return None
    return None


def _scrubbed(exc: ModelError, name: str, endpoint: Endpoint) -> ModelError:
    """`exc` with this model's name and provider filled in and every secret removed."""
    exc.model = exc.model or name
    exc.provider = exc.provider or endpoint.provider
    exc.message = redact(exc.message, *endpoint.secrets)
    if exc.provider_message:
        exc.provider_message = redact(exc.provider_message, *endpoint.secrets)
    exc.args = (exc.message,)
    return exc


def _unanswered(request: ChatRequest) -> Usage:
    """What a request the provider received and never answered bills: its input (an estimate;
    a provider that went on generating bills that too, which we never see)."""
    return Usage(input_tokens=estimate_input_tokens(request), estimated=True)


def _completed(usage: Usage | None, request: ChatRequest, text: str) -> Usage:
    """The usage a server reported, with what it left out (all of it, for None) estimated from
    the prompt and the answer's `text`, so a cost is never silently zero."""
    usage = usage or Usage(estimated=True)
    if not usage.estimated or (usage.input_tokens and usage.output_tokens):
        return usage
    return replace(
        usage,
        input_tokens=usage.input_tokens or estimate_input_tokens(request),
        output_tokens=usage.output_tokens or estimate_tokens(text),
    )


def _whole(assembler: StreamAssembler, choices: int) -> bool:
    """Whether every one of the `choices` expected has arrived and finished."""
    return assembler.finished and len(assembler.choices()) >= choices


def _json_type(headers: Mapping[str, str]) -> bool:
    return _content_type(headers) == "application/json"


def _not_a_stream(headers: Mapping[str, str]) -> bool:
    # A proxy's HTML page or a JSON body where events belong; a missing type is given the
    # benefit of the doubt, as some OpenAI-compatible servers leave it out.
    return _content_type(headers) in ("text/html", "application/json")


def _content_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


def _with_query(url: str, query: Mapping[str, str]) -> str:
    if not query:
        return url
    from urllib.parse import urlencode

    return url + ("&" if "?" in url else "?") + urlencode(dict(query))
