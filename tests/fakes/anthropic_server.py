"""A fake Anthropic Messages API: `POST /v1/messages` and `POST /v1/messages/count_tokens` on a
real socket, faithful to the wire.

Answers are deterministic: by default the text is `You said: <last user text>`; a tool is called
when `tool_choice` demands one (`tool` → that tool, `any` → the first tool the last user text
names, else the first tool), or when `auto` is set and the last user text names a tool; with
`output_config.format` the text is JSON fitting its schema (`sample`), as structured outputs
answer. Tests
script the next answers with `Turn`s. Requests are checked the way the API checks them (auth,
`anthropic-version`, the body against the official SDK's own request types, turn rules) and
refused with the API's own 4xx error bodies; answers, stream events and error bodies have the
exact shapes of the API, which the tests check against the SDK's response types. Prompt tokens
are counted one way for both (`input_tokens`), so a count agrees with the usage of a call.

With `thinking` on (or a `Turn` that scripts it), the answer opens with a signed thinking block,
streamed as `thinking_delta` and `signature_delta`; thinking blocks sent back must carry the
signature the fake gave them (`anthropic_thinking.py`), as the API checks.

Beta-aware, as the API is: `context_management` is an extra input unless `anthropic-beta` names
context-management-2025-06-27, and then it is checked against the SDK's beta type. A
`{"role": "system"}` message (mid-conversation system) must come right after a user turn.

Version-aware, as the API is: with `anthropic-version: 2023-06-01` (what modelyard sends) the
legacy sampling fields `temperature`, `top_p` and `top_k` are accepted; with a later version
(what the official SDK sends) they are refused, as the API does since 2026-10-21.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from anthropic.types.beta.beta_context_management_config_param import (
    BetaContextManagementConfigParam,
)
from anthropic.types.message_count_tokens_params import MessageCountTokensParams
from anthropic.types.message_create_params import (
    MessageCreateParamsNonStreaming,
    MessageCreateParamsStreaming,
)
from pydantic import TypeAdapter, ValidationError

from tests.fakes import anthropic_thinking
from tests.fakes.anthropic_cache import (
    MAX_BREAKPOINTS,
    CacheUse,
    PromptCache,
    count_breakpoints,
    marked_tokens,
)
from tests.fakes.server import FakeUpstream, Fault, sse

LEGACY_VERSION = "2023-06-01"
LEGACY_FIELDS = ("temperature", "top_p", "top_k")

ERROR_TYPES = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "An unexpected error has occurred internal to Anthropic's systems."),
    504: ("timeout_error", "Request timed out."),
    529: ("overloaded_error", "Overloaded"),
}

_NON_STREAMING = TypeAdapter(MessageCreateParamsNonStreaming)
_STREAMING = TypeAdapter(MessageCreateParamsStreaming)
_TOP_LEVEL = (
    MessageCreateParamsNonStreaming.__required_keys__
    | MessageCreateParamsNonStreaming.__optional_keys__
    | {"stream"}
)
BETA_FIELDS: dict[str, tuple[str, TypeAdapter[Any]]] = {
    "context_management": (
        "context-management-2025-06-27",
        TypeAdapter(BetaContextManagementConfigParam),
    ),
}
"""Fields the API takes only with their beta named in `anthropic-beta`, and their SDK type."""
_COUNT = TypeAdapter(MessageCountTokensParams)
_COUNT_TOP_LEVEL = (
    MessageCountTokensParams.__required_keys__ | MessageCountTokensParams.__optional_keys__
)


@dataclass(frozen=True, kw_only=True)
class ToolUse:
    """A tool call to script: the tool's name and its input."""

    name: str
    input: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Turn:
    """The fake's next answer, scripted (fields left None take the default behaviour)."""

    text: str | None = None
    tool_uses: tuple[ToolUse, ...] = ()
    thinking: str | None = None
    """Open the answer with a thinking block of this text, whether or not the request asks for
    thinking (clients must not show it as text)."""
    redacted_thinking: bool = False
    """Follow it with a redacted thinking block."""
    stop_reason: str | None = None
    """Override the stop reason (e.g. refusal, pause_turn, or one the API never sends)."""
    error_after: int | None = None
    """Streams: send an `error` event after this many events and end the stream."""
    error_type: str = "overloaded_error"


def validate_request(
    body: Any,
    *,
    version: str = LEGACY_VERSION,
    kind: str = "messages",
    betas: frozenset[str] = frozenset(),
) -> str | None:
    """Why the Messages API (`kind` "messages", or "count_tokens" for its token counting) would
    refuse this body, or None when it is valid.

    Checks the body against the official SDK's request types, exactly: a field the types do not
    know (anywhere in the body) is an error, as the API reports extra inputs. The count endpoint
    takes no `max_tokens`, `stream` or sampling settings at all. A beta field is known only
    with its beta in `betas` (the `anthropic-beta` header), and then checked against the SDK's
    beta type.
    """
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    sent, body = body, dict(body)
    for name, (beta, adapter) in BETA_FIELDS.items():
        if name in body and beta in betas:
            problem = _validate_part(adapter, body.pop(name), name)
            if problem is not None:
                return problem
    counting = kind == "count_tokens"
    for name in () if counting else LEGACY_FIELDS:
        if name in body:
            if version != LEGACY_VERSION:
                return f"`{name}` is deprecated for this model."
            del body[name]
    unknown = sorted(set(body) - (_COUNT_TOP_LEVEL if counting else _TOP_LEVEL))
    if unknown:
        return f"{unknown[0]}: Extra inputs are not permitted"
    adapter = _COUNT if counting else _STREAMING if body.get("stream") else _NON_STREAMING
    try:
        validated = _drain(adapter.validate_python(body))
    except ValidationError as exc:
        first = exc.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    difference = _first_difference(body, validated, "")
    if difference is not None:
        return f"{difference}: Extra inputs are not permitted"
    return _turn_rules(body) or anthropic_thinking.check(sent)


def _validate_part(adapter: TypeAdapter[Any], value: Any, where: str) -> str | None:
    try:
        validated = _drain(adapter.validate_python(value))
    except ValidationError as exc:
        first = exc.errors()[0]
        return f"{'.'.join([where, *(str(p) for p in first['loc'])])}: {first['msg']}"
    difference = _first_difference(value, validated, where)
    return None if difference is None else f"{difference}: Extra inputs are not permitted"


def _drain(value: Any) -> Any:
    # The SDK types use Iterable[...] fields, which pydantic validates lazily: consume them.
    if isinstance(value, dict):
        return {k: _drain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | Iterator):
        return [_drain(v) for v in value]
    return value


def _first_difference(sent: Any, kept: Any, where: str) -> str | None:
    if isinstance(sent, dict) and isinstance(kept, dict):
        for key in sent:
            if key not in kept:
                return f"{where}.{key}".lstrip(".")
            found = _first_difference(sent[key], kept[key], f"{where}.{key}")
            if found:
                return found
    elif isinstance(sent, list) and isinstance(kept, list):
        for index, (a, b) in enumerate(zip(sent, kept, strict=True)):
            found = _first_difference(a, b, f"{where}.{index}")
            if found:
                return found
    return None


def _turn_rules(body: dict[str, Any]) -> str | None:
    messages = body["messages"]
    if not messages:
        return "messages: at least one message is required"
    if "max_tokens" in body and body["max_tokens"] < 1:
        return "max_tokens: must be at least 1"
    pending: set[str] = set()
    for index, message in enumerate(messages):
        if message["role"] == "system" and (index == 0 or messages[index - 1]["role"] != "user"):
            return f"messages.{index}: a system message must come right after a user turn"
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not blocks:
            return f"messages.{index}: all messages must have non-empty content"
        for block in blocks:
            if block["type"] == "text" and not block["text"]:
                return f"messages.{index}: text content blocks must be non-empty"
        results = [b["tool_use_id"] for b in blocks if b["type"] == "tool_result"]
        if pending and set(results) != pending:
            return (
                f"messages.{index}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(sorted(pending - set(results)))}"
            )
        if results and blocks[0]["type"] != "tool_result":
            return f"messages.{index}: tool_result blocks must come first in the user message"
        pending = {b["id"] for b in blocks if b["type"] == "tool_use"}
    last = messages[-1]
    if last["role"] == "assistant":
        content = last["content"]
        text = content if isinstance(content, str) else (content[-1].get("text") or "x")
        if text != text.rstrip():
            return "messages: final assistant content cannot end with trailing whitespace"
    marked = count_breakpoints(body)
    if marked > MAX_BREAKPOINTS:
        return (
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {marked}."
        )
    names = {t["name"] for t in body.get("tools", [])}
    choice = body.get("tool_choice")
    if choice and choice["type"] == "tool" and choice["name"] not in names:
        return f"tool_choice.name: tool {choice['name']!r} not found in tools"
    return None


def sample(schema: dict[str, Any]) -> Any:
    """A value that fits a JSON Schema: what the fake puts in a tool call's input."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if kind == "object":
        return {k: sample(v) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [sample(schema.get("items", {"type": "string"}))]
    return {"string": "text", "integer": 1, "number": 1.5, "boolean": True}.get(kind)


def _json_answer(body: dict[str, Any]) -> str | None:
    """With `output_config.format` (structured outputs), the answer: JSON fitting its schema."""
    fmt = (body.get("output_config") or {}).get("format")
    return orjson.dumps(sample(fmt["schema"])).decode() if fmt else None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if b.get("type") == "text")


def _tokens(text: str) -> int:
    return len(text.split())


def input_tokens(body: dict[str, Any]) -> int:
    """The prompt's tokens, as the fake counts them (JSON bytes / 4): messages, system and tools,
    and never fewer than the prefix its last cache breakpoint marks. What a Messages call's usage
    adds up to (input, cache reads and writes) and what count_tokens answers."""
    tokens = len(orjson.dumps(body["messages"])) // 4 + len(_text_of(body.get("system", ""))) // 4
    if body.get("tools"):
        tokens += len(orjson.dumps(body["tools"])) // 4
    return max(tokens, marked_tokens(body)) + 1


class FakeAnthropic(FakeUpstream):
    """The Anthropic Messages API, faithfully shaped, with scripted answers and faults."""

    def __init__(self, *, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        """When set, any other key is refused with 401."""
        self.turns: deque[Turn] = deque()
        self.cache_read_tokens = 0
        """Prompt tokens to report as read from the prompt cache (with the two below: when all
        are 0, the request's `cache_control` breakpoints decide, through `prompt_cache`)."""
        self.cache_creation_tokens = 0
        self.cache_creation_1h_tokens = 0
        """The part of `cache_creation_tokens` written to the 1-hour cache."""
        self.prompt_cache = PromptCache()
        """The prefixes earlier requests' breakpoints wrote."""
        self.final_events = 1
        """How many trailing stream events `Fault(no_final=True)` leaves out: 1 drops
        message_stop; 2 drops message_delta too (so the stop reason never arrives)."""
        self._ids = itertools.count(1)

    def script(self, *turns: Turn) -> None:
        """Answer the next requests with these turns, one each."""
        self.turns.extend(turns)

    def routes(self) -> list[web.RouteDef]:
        async def messages(request: web.Request) -> web.StreamResponse:
            return await self.handle(request, "messages")

        async def count_tokens(request: web.Request) -> web.StreamResponse:
            return await self.handle(request, "count_tokens")

        return [
            web.post("/v1/messages", messages),
            web.post("/v1/messages/count_tokens", count_tokens),
        ]

    def reject(
        self, kind: str, request: web.Request, body: Any
    ) -> tuple[int, dict[str, Any]] | None:
        refusal = self.check(request, body, kind)
        if refusal is None:
            return None
        status, error_type, message = refusal
        return status, self.error_body(status, error_type, message)

    def check(
        self, request: web.Request, body: Any, kind: str = "messages"
    ) -> tuple[int, str, str] | None:
        """Why the real API would refuse this request: (status, error type, message)."""
        key = request.headers.get("x-api-key")
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            key = key or bearer[7:]
        if not key:
            return 401, "authentication_error", "x-api-key header is required"
        if self.api_key is not None and key != self.api_key:
            return 401, "authentication_error", "invalid x-api-key"
        version = request.headers.get("anthropic-version")
        if not version:
            return 400, "invalid_request_error", "anthropic-version: header is required"
        betas = frozenset(
            name.strip() for name in request.headers.get("anthropic-beta", "").split(",")
        )
        problem = validate_request(body, version=version, kind=kind, betas=betas)
        if problem is not None:
            return 400, "invalid_request_error", problem
        return None

    def response_headers(self, kind: str, status: int) -> dict[str, str]:
        headers = {"request-id": f"req_fake{next(self._ids):06d}"}
        if status < 400:
            headers.update(quota_headers(remaining=49, tokens_remaining=39000))
        return headers

    def error_body(
        self, status: int, error_type: str | None, message: str | None
    ) -> dict[str, Any]:
        default_type, default_message = ERROR_TYPES.get(status, ERROR_TYPES[500])
        return {
            "type": "error",
            "error": {"type": error_type or default_type, "message": message or default_message},
            "request_id": f"req_fake{next(self._ids):06d}",
        }

    # --- answers -----------------------------------------------------------------------------

    def answer(self, kind: str, request: web.Request, body: Any) -> dict[str, Any]:
        if kind == "count_tokens":
            return {"input_tokens": input_tokens(body)}
        plan = self._plan(body)
        return {
            "id": plan.id,
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": plan.blocks,
            "stop_reason": plan.stop_reason,
            "stop_sequence": plan.stop_sequence,
            "usage": {**plan.usage, "output_tokens": plan.output_tokens},
        }

    def events(self, kind: str, request: web.Request, body: Any) -> tuple[list[bytes], list[bytes]]:
        plan = self._plan(body)
        start = {
            "id": plan.id,
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**plan.usage, "output_tokens": 1},
        }
        out = [sse({"type": "message_start", "message": start}, "message_start")]
        for index, block in enumerate(plan.blocks):
            block_events = _block_events(index, block)
            if index == 0:  # where the API sends its ping: right after the first block opens
                block_events.insert(1, sse({"type": "ping"}, "ping"))
            out.extend(block_events)
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": plan.stop_reason, "stop_sequence": plan.stop_sequence},
            "usage": {"output_tokens": plan.output_tokens},
        }
        out.append(sse(delta, "message_delta"))
        out.append(sse({"type": "message_stop"}, "message_stop"))
        if plan.turn is not None and plan.turn.error_after is not None:
            error = {
                "type": "error",
                "error": {
                    "type": plan.turn.error_type,
                    "message": ERROR_TYPES[529][1]
                    if plan.turn.error_type == "overloaded_error"
                    else "stream failed",
                },
            }
            return [*out[: plan.turn.error_after], sse(error, "error")], []
        split = len(out) - self.final_events
        return out[:split], out[split:]

    def _plan(self, body: dict[str, Any]) -> _Plan:
        turn = self.turns.popleft() if self.turns else None
        messages = body["messages"]
        last_user = next(
            (_text_of(m["content"]) for m in reversed(messages) if m["role"] == "user"), ""
        )
        prefill = messages[-1]["role"] == "assistant"
        blocks = anthropic_thinking.thinking_blocks(
            body,
            turn.thinking if turn is not None else None,
            turn is not None and turn.redacted_thinking,
        )
        uses = list(turn.tool_uses) if turn is not None else []
        if not uses:
            uses = self._demanded_tools(body, last_user)
        text = turn.text if turn is not None and turn.text is not None else None
        if text is None and not uses:
            text = _json_answer(body) or (
                "and that is all." if prefill else f"You said: {last_user}"
            )
        stop_reason = "tool_use" if uses else "end_turn"
        stop_sequence = None
        output_tokens = sum(_tokens(b.get("thinking", "")) for b in blocks)  # billed as output
        if text:
            text, stop_reason, stop_sequence = _apply_limits(text, body, stop_reason)
            output_tokens += _tokens(text)
            if text:
                blocks.append({"type": "text", "text": text})
        if stop_reason in ("tool_use", "end_turn"):
            for use in uses:
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": f"toolu_fake{next(self._ids):06d}",
                        "name": use.name,
                        "input": use.input,
                    }
                )
                output_tokens += len(orjson.dumps(use.input)) // 4 + 1
        if turn is not None and turn.stop_reason is not None:
            stop_reason = turn.stop_reason
        prompt = input_tokens(body)
        use = CacheUse(
            read=self.cache_read_tokens,
            written=self.cache_creation_tokens,
            written_1h=self.cache_creation_1h_tokens,
        )
        if use == CacheUse():
            use = self.prompt_cache.use(body)
        cached = min(use.read, prompt)
        created = min(use.written, prompt - cached)
        created_1h = min(use.written_1h, created)
        usage = {
            "input_tokens": prompt - cached - created,
            "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": created,
            "cache_creation": {
                "ephemeral_5m_input_tokens": created - created_1h,
                "ephemeral_1h_input_tokens": created_1h,
            },
        }
        return _Plan(
            id=f"msg_fake{next(self._ids):06d}",
            turn=turn,
            blocks=blocks,
            stop_reason=stop_reason,
            stop_sequence=stop_sequence,
            usage=usage,
            output_tokens=max(1, output_tokens),
        )

    def _demanded_tools(self, body: dict[str, Any], last_user: str) -> list[ToolUse]:
        tools = body.get("tools") or []
        if not tools:
            return []
        choice = body.get("tool_choice") or {"type": "auto"}
        named = [t for t in tools if re.search(rf"\b{re.escape(t['name'])}\b", last_user)]
        if choice["type"] == "tool":
            picked = [t for t in tools if t["name"] == choice["name"]]
        elif choice["type"] == "any":
            picked = named[:1] or tools[:1]
        elif choice["type"] == "auto":
            picked = named[:1]
        else:
            picked = []
        return [ToolUse(name=t["name"], input=sample(t["input_schema"])) for t in picked]


@dataclass
class _Plan:
    id: str
    turn: Turn | None
    blocks: list[dict[str, Any]]
    stop_reason: str
    stop_sequence: str | None
    usage: dict[str, int]
    output_tokens: int


def _apply_limits(text: str, body: dict[str, Any], stop_reason: str) -> tuple[str, str, str | None]:
    """The text cut at the first stop sequence, or at max_tokens words."""
    hits = [(text.find(s), s) for s in body.get("stop_sequences", []) if s in text]
    if hits:
        at, sequence = min(hits)
        return text[:at], "stop_sequence", sequence
    words = re.findall(r"\S+\s*", text)
    if len(words) > body["max_tokens"]:
        return "".join(words[: body["max_tokens"]]).rstrip(), "max_tokens", None
    return text, stop_reason, None


def _block_events(index: int, block: dict[str, Any]) -> list[bytes]:
    kind = block["type"]
    if kind == "text":
        start: dict[str, Any] = {"type": "text", "text": ""}
        pieces = [{"type": "text_delta", "text": w} for w in re.findall(r"\s*\S+", block["text"])]
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        words = re.findall(r"\s*\S+", block["thinking"])
        pieces = [{"type": "thinking_delta", "thinking": w} for w in words]
        pieces.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind == "redacted_thinking":
        start, pieces = block, []  # whole in its start, as the API sends it
    else:
        start = {**block, "input": {}}
        # A tool called without arguments gets only the empty first piece, as on the real API.
        raw = orjson.dumps(block["input"]).decode() if block["input"] else ""
        third = max(1, len(raw) // 3)
        parts = [raw[i : i + third] for i in range(0, len(raw), third)]
        pieces = [{"type": "input_json_delta", "partial_json": p} for p in ["", *parts]]
    events = [
        sse(
            {"type": "content_block_start", "index": index, "content_block": start},
            "content_block_start",
        )
    ]
    events.extend(
        sse({"type": "content_block_delta", "index": index, "delta": d}, "content_block_delta")
        for d in pieces
    )
    events.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
    return events


def quota_headers(
    *, remaining: int, tokens_remaining: int, reset_in: float = 1.0
) -> dict[str, str]:
    """`anthropic-ratelimit-*` headers as the API sends them (resets are RFC 3339 instants)."""
    import datetime as dt

    reset = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=reset_in)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    return {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": str(remaining),
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-tokens-limit": "40000",
        "anthropic-ratelimit-tokens-remaining": str(tokens_remaining),
        "anthropic-ratelimit-tokens-reset": reset,
    }


def rate_limited(retry_after: float | None = 1.0) -> Fault:
    """A 429 as the API sends it: quota headers at zero and, unless None, `retry-after`."""
    headers = quota_headers(remaining=0, tokens_remaining=0, reset_in=retry_after or 1.0)
    if retry_after is not None:
        headers["retry-after"] = f"{retry_after:g}"
    return Fault(status=429, headers=headers)


def overloaded() -> Fault:
    """A 529 overloaded_error."""
    return Fault(status=529)


def prompt_too_long(tokens: int = 210_000, limit: int = 200_000) -> Fault:
    """The 400 the API answers a prompt that does not fit."""
    return Fault(
        status=400,
        error_type="invalid_request_error",
        message=f"prompt is too long: {tokens} tokens > {limit} maximum",
    )
