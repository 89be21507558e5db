"""A fake OpenAI API on a real socket: chat completions (JSON and SSE), embeddings, models.

Faithful to the real API where a client can tell: the same JSON shapes (checked against the
official SDK's types in tests), the same SSE sequence (a role delta first, content or tool-call
deltas, a finish chunk per choice, a usage-only chunk when `include_usage` is asked, then
`data: [DONE]`), the same error bodies and headers, and the same refusals of bad requests
(unknown fields, `max_tokens` on a reasoning model, `reasoning_effort` on another, `metadata`
without `store`, a wrong key).

Answers are deterministic: by default the model echoes the last user message; tests script
the next replies with `script(Reply(...))`. Azure's deployment paths are served too, with the
prompt filter results Azure opens its streams with.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
import struct
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.openai_types import problems
from tests.fakes.server import FakeUpstream, sse

CREATED = 1_730_000_000
FINGERPRINT = "fp_f00dfeed42"
REASONING_MODELS = re.compile(r"^(o\d|gpt-5)")
_SAFE = {"filtered": False, "severity": "safe"}
AZURE_PROMPT_FILTER = {
    "choices": [],
    "created": 0,
    "id": "",
    "model": "",
    "object": "",
    "prompt_filter_results": [
        {
            "prompt_index": 0,
            "content_filter_results": {
                "hate": _SAFE,
                "self_harm": _SAFE,
                "sexual": _SAFE,
                "violence": _SAFE,
                "jailbreak": {"filtered": False, "detected": False},
            },
        }
    ],
}
"""The chunk Azure OpenAI opens every stream with: its prompt's filter results, nameless."""


@dataclass(frozen=True, kw_only=True)
class Reply:
    """What the fake answers to the next chat request (unset fields are derived as usual)."""

    text: str | None = None
    tool_calls: tuple[tuple[str, str], ...] | None = None
    """(function name, arguments JSON) pairs; the answer's content is then null."""
    finish_reason: str | None = None
    """Any string, even one the API never sends (to test how clients take it)."""
    refusal: str | None = None
    logprobs: tuple[tuple[str, float], ...] | None = None
    """(token, logprob) pairs; the text is then their concatenation."""
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    model: str | None = None
    """The model id to report (default: the dated id of the requested alias, or the id)."""
    usage: bool = True
    """False leaves usage out of the answer (as some compatible servers do)."""
    raw: dict[str, Any] | None = None
    """A whole JSON body to answer with instead (non-streaming)."""
    events: tuple[bytes, ...] | None = None
    """SSE frames to stream instead; `[DONE]` is still sent after them as the final event."""


def tokens(text: str) -> list[str]:
    """The fake's tokenizer: each word with its leading space."""
    return re.findall(r"\s*\S+", text)


def vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for `text`."""
    digest = hashlib.sha256(text.encode()).digest() * (dimensions // 32 + 1)
    raw = [b / 255.0 - 0.5 for b in digest[:dimensions]]
    norm = sum(x * x for x in raw) ** 0.5 or 1.0
    return [round(x / norm, 6) for x in raw]


def example(schema: Any, text: str) -> Any:
    """A value matching a (simple) JSON schema: what the fake model 'writes' for tools and
    structured outputs."""
    if not isinstance(schema, dict):
        return text
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: example(sub, text) for name, sub in props.items()}
    if kind == "array":
        return [example(schema.get("items", {}), text)]
    return {"integer": 1, "number": 1.5, "boolean": True, "null": None}.get(kind, text)


class FakeOpenAI(FakeUpstream):
    """`FakeUpstream` speaking the OpenAI API under `/v1` (and Azure's deployment paths)."""

    def __init__(self, *, api_key: str | None = None, validate: bool = True) -> None:
        super().__init__()
        self.api_key = api_key
        self.validate = validate
        self.aliases = {
            "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
            "gpt-4o": "gpt-4o-2024-08-06",
        }
        self.models = ["gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06", "text-embedding-3-small"]
        self.embedding_dimensions = 8
        self.replies: deque[Reply] = deque()
        self._ids = itertools.count(1)
        self._reply_lock = threading.Lock()

    # --- scripting ---------------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Answer the next chat requests with these, one each, in order."""
        with self._reply_lock:
            self.replies.extend(replies)

    def reset(self) -> None:
        super().reset()
        with self._reply_lock:
            self.replies.clear()

    def _next_reply(self) -> Reply:
        with self._reply_lock:
            return self.replies.popleft() if self.replies else Reply()

    # --- routes ------------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        async def chat(request: web.Request) -> web.StreamResponse:
            return await self.handle(request, "chat")

        async def embeddings(request: web.Request) -> web.StreamResponse:
            return await self.handle(request, "embeddings")

        async def models(request: web.Request) -> web.StreamResponse:
            return await self.handle(request, "models")

        return [
            web.post("/v1/chat/completions", chat),
            web.post("/v1/embeddings", embeddings),
            web.get("/v1/models", models),
            web.post("/openai/deployments/{deployment}/chat/completions", chat),
            web.post("/openai/deployments/{deployment}/embeddings", embeddings),
        ]

    # --- refusing bad requests ---------------------------------------------------------------

    def reject(
        self, kind: str, request: web.Request, body: Any
    ) -> tuple[int, dict[str, Any]] | None:
        denied = self._check_key(request)
        if denied is not None:
            return 401, denied
        if kind == "models":
            return None
        if not isinstance(body, dict):
            return 400, self._invalid("We could not parse the JSON body of your request.")
        if self.validate:
            found = problems("embedding_request" if kind == "embeddings" else _kind(body), body)
            if found:
                return 400, self._invalid(f"Invalid request: {found[0]}")
        return self.api_rules(body) if kind == "chat" else None

    def _check_key(self, request: web.Request) -> dict[str, Any] | None:
        if self.api_key is None:
            return None
        given = request.headers.get("api-key")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth.removeprefix("Bearer ")
        if given == self.api_key:
            return None
        if not given:
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            return {"error": {"message": message, "type": "invalid_request_error",
                              "param": None, "code": None}}  # fmt: skip
        masked = f"{given[:3]}*****{given[-4:]}" if len(given) > 8 else "*****"
        return self.error_body(401, "invalid_api_key", f"Incorrect API key provided: {masked}.")

    def api_rules(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """The cross-field rules the API enforces beyond the schema."""
        tools = bool(body.get("tools"))
        rules = [
            (not tools and "tool_choice" in body, "tool_choice",
             "'tool_choice' is only allowed when 'tools' are specified."),
            (not tools and "parallel_tool_calls" in body, "parallel_tool_calls",
             "'parallel_tool_calls' is only allowed when 'tools' are specified."),
            ("top_logprobs" in body and not body.get("logprobs"), "top_logprobs",
             "'top_logprobs' is only allowed when 'logprobs' is enabled."),
            ("stream_options" in body and not body.get("stream"), "stream_options",
             "The 'stream_options' parameter is only allowed when 'stream' is enabled."),
            ("metadata" in body and not body.get("store"), "metadata",
             "The 'metadata' parameter is only allowed when 'store' is enabled."),
        ]  # fmt: skip
        for broken, param, message in rules:
            if broken:
                return 400, self._invalid(message, param=param)
        if "max_tokens" in body and REASONING_MODELS.match(str(body.get("model", ""))):
            message = (
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead."
            )
            return 400, self._invalid(message, param="max_tokens", code="unsupported_parameter")
        if "reasoning_effort" in body and not REASONING_MODELS.match(str(body.get("model", ""))):
            message = "Unsupported parameter: 'reasoning_effort' is not supported with this model."
            return 400, self._invalid(
                message, param="reasoning_effort", code="unsupported_parameter"
            )
        return None

    @staticmethod
    def _invalid(message: str, *, param: str | None = None, code: str | None = None) -> Any:
        return {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": code,
            }
        }

    # --- errors and headers ------------------------------------------------------------------

    def error_body(
        self, status: int, error_type: str | None, message: str | None
    ) -> dict[str, Any]:
        kind, code, param, default = _ERRORS.get(status, _ERRORS[500])
        if error_type is not None and error_type in _ERROR_VARIANTS:
            kind, param, default = _ERROR_VARIANTS[error_type]
            code = error_type
        elif error_type is not None:
            code = error_type
        error = {"message": message or default, "type": kind, "param": param, "code": code}
        return {"error": error}

    def error_event(self) -> bytes:
        """`data: {"error": ...}`, as OpenAI ends a stream that failed part-way."""
        return sse(self.error_body(500, None, None))

    def response_headers(self, kind: str, status: int) -> dict[str, str]:
        exhausted = status == 429
        return {
            "x-request-id": f"req_{next(self._ids):032x}",
            "openai-organization": "org-fake",
            "openai-processing-ms": "12",
            "openai-version": "2020-10-01",
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "0" if exhausted else "499",
            "x-ratelimit-reset-requests": "1.5s" if exhausted else "120ms",
            "x-ratelimit-limit-tokens": "200000",
            "x-ratelimit-remaining-tokens": "199000",
            "x-ratelimit-reset-tokens": "300ms",
        }

    # --- answers -----------------------------------------------------------------------------

    def answer(self, kind: str, request: web.Request, body: Any) -> dict[str, Any]:
        if kind == "models":
            return {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": CREATED, "owned_by": "system"}
                    for m in self.models
                ],
            }
        if kind == "embeddings":
            return self.embeddings(body)
        reply = self._next_reply()
        return reply.raw if reply.raw is not None else self.completion(body, reply)

    def events(self, kind: str, request: web.Request, body: Any) -> tuple[list[bytes], list[bytes]]:
        reply = self._next_reply()
        if reply.events is not None:
            return list(reply.events), [sse("[DONE]")]
        content, final = self.stream_events(body, reply)
        if request is not None and request.path.startswith("/openai/deployments/"):
            content.insert(0, sse(AZURE_PROMPT_FILTER))
        return content, final

    def completion(self, body: dict[str, Any], reply: Reply | None = None) -> dict[str, Any]:
        """The chat.completion the fake answers `body` with."""
        reply = reply or Reply()
        plan = _Plan(body, reply, self.aliases)
        choices = []
        for index in range(plan.n):
            text, reason = plan.text_for(index)
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None if plan.calls or reply.refusal else text,
                "refusal": reply.refusal,
                "annotations": [],
            }
            if plan.calls:
                message["tool_calls"] = [
                    {"id": call_id, "type": "function",
                     "function": {"name": name, "arguments": args}}
                    for call_id, name, args in plan.calls
                ]  # fmt: skip
            logprobs = None
            if plan.wants_logprobs:
                logprobs = {"content": plan.logprobs(text), "refusal": None}
            choices.append(
                {"index": index, "message": message, "logprobs": logprobs, "finish_reason": reason}
            )
        out = {
            "id": plan.id,
            "object": "chat.completion",
            "created": CREATED,
            "model": plan.model,
            "choices": choices,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
        if reply.usage:
            out["usage"] = plan.usage()
        return out

    def stream_events(
        self, body: dict[str, Any], reply: Reply | None = None
    ) -> tuple[list[bytes], list[bytes]]:
        """The SSE frames of a streamed answer: (content events, terminal events)."""
        content, final = self.chunks(body, reply)
        return [sse(c) for c in content], [*(sse(c) for c in final), sse("[DONE]")]

    def chunks(
        self, body: dict[str, Any], reply: Reply | None = None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The chat.completion.chunk objects of a streamed answer: (content, usage)."""
        reply = reply or Reply()
        plan = _Plan(body, reply, self.aliases)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        per_choice = [plan.choice_deltas(index) for index in range(plan.n)]
        content = []
        for position in range(max(len(d) for d in per_choice)):
            for deltas in per_choice:
                if position < len(deltas):
                    content.append(plan.chunk([deltas[position]], include_usage))
        final = []
        if include_usage:
            final.append({**plan.chunk([], include_usage), "usage": plan.usage()})
        return content, final

    def embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        """The embeddings answer (float or base64, as asked)."""
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        size = body.get("dimensions") or self.embedding_dimensions
        data = []
        for index, text in enumerate(inputs):
            values = vector(str(text), size)
            encoded: Any = values
            if body.get("encoding_format") == "base64":
                packed = struct.pack(f"<{len(values)}f", *values)
                encoded = base64.b64encode(packed).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        used = sum(len(tokens(str(t))) for t in inputs)
        return {
            "object": "list",
            "data": data,
            "model": str(body["model"]),
            "usage": {"prompt_tokens": used, "total_tokens": used},
        }


def _kind(body: dict[str, Any]) -> str:
    return "stream_request" if body.get("stream") is True else "request"


# status: (type, code, param, message) of OpenAI's error bodies
_ERRORS: dict[int, tuple[str, str | None, str | None, str]] = {
    400: ("invalid_request_error", None, None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", None,
          "Incorrect API key provided: sk-fa*****1234. You can find your API key at "
          "https://platform.openai.com/account/api-keys."),
    403: ("request_forbidden", "unsupported_country_region_territory", None,
          "Country, region, or territory not supported"),
    404: ("invalid_request_error", "model_not_found", "model",
          "The model `gpt-9` does not exist or you do not have access to it."),
    408: ("timeout", None, None, "Request timed out."),
    409: ("server_error", None, None, "The request could not be completed due to a conflict."),
    422: ("invalid_request_error", None, None, "Unprocessable entity."),
    429: ("requests", "rate_limit_exceeded", None,
          "Rate limit reached for gpt-4o-mini in organization org-fake on requests per min "
          "(RPM): Limit 500, Used 500, Requested 1. Please try again in 120ms. Visit "
          "https://platform.openai.com/account/rate-limits to learn more."),
    500: ("server_error", None, None,
          "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, None, "Bad gateway."),
    503: ("server_error", None, None,
          "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, None, "Gateway timeout."),
}  # fmt: skip

# error_type: (type, param, message) for the codes that change the whole body
_ERROR_VARIANTS: dict[str, tuple[str, str | None, str]] = {
    "context_length_exceeded": ("invalid_request_error", "messages",
        "This model's maximum context length is 128000 tokens. However, your messages "
        "resulted in 130412 tokens. Please reduce the length of the messages."),
    "invalid_prompt": ("invalid_request_error", None,
        "Invalid prompt: your prompt was flagged as potentially violating our usage policy. "
        "Please try again with a different prompt."),
    "content_filter": ("invalid_request_error", "prompt",
        "The response was filtered due to the prompt triggering Azure OpenAI's content "
        "management policy. Please modify your prompt and retry."),
    "insufficient_quota": ("insufficient_quota", None,
        "You exceeded your current quota, please check your plan and billing details. For "
        "more information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors."),
    "rate_limit_exceeded": ("tokens", None,
        "Rate limit reached for gpt-4o-mini in organization org-fake on tokens per min "
        "(TPM): Limit 200000, Used 199500, Requested 1200. Please try again in 210ms."),
}  # fmt: skip


class _Plan:
    """Everything derived from one request and its scripted reply."""

    def __init__(self, body: dict[str, Any], reply: Reply, aliases: dict[str, str]) -> None:
        self.body = body
        self.reply = reply
        requested = str(body.get("model", ""))
        self.model = reply.model or aliases.get(requested, requested)
        digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
        self.id = f"chatcmpl-{digest[:29]}"
        self.n = int(body.get("n") or 1)
        self.wants_logprobs = bool(body.get("logprobs"))
        self.top = int(body.get("top_logprobs") or 0)
        self.limit = body.get("max_completion_tokens") or body.get("max_tokens")
        stop = body.get("stop") or []
        self.stop = [stop] if isinstance(stop, str) else list(stop)
        self.calls = self._calls(digest)
        self.base = self._base_text()

    @property
    def prompt(self) -> str:
        for message in reversed(self.body.get("messages", [])):
            if message.get("role") == "user":
                return _text_of(message.get("content"))
        return ""

    def _base_text(self) -> str:
        if self.reply.logprobs is not None:
            return "".join(token for token, _ in self.reply.logprobs)
        if self.reply.text is not None:
            return self.reply.text
        fmt = self.body.get("response_format") or {}
        if fmt.get("type") == "json_object":
            return orjson.dumps({"answer": f"Echo: {self.prompt}"}).decode()
        if fmt.get("type") == "json_schema":
            schema = fmt.get("json_schema", {}).get("schema", {})
            return orjson.dumps(example(schema, self.prompt)).decode()
        return f"Echo: {self.prompt}"

    def _calls(self, digest: str) -> list[tuple[str, str, str]]:
        scripted = self.reply.tool_calls
        if scripted is None:
            scripted = self._forced_calls()
        return [
            (f"call_{digest[i * 4 : i * 4 + 20]}{i}", name, args)
            for i, (name, args) in enumerate(scripted)
        ]

    def _forced_calls(self) -> tuple[tuple[str, str], ...]:
        tools = [t["function"] for t in self.body.get("tools", []) if t.get("type") == "function"]
        choice = self.body.get("tool_choice")
        if not tools or choice in (None, "auto", "none"):
            return ()
        if isinstance(choice, dict):
            tools = [t for t in tools if t["name"] == choice["function"]["name"]]
        elif self.body.get("parallel_tool_calls") is False:
            tools = tools[:1]
        args = (orjson.dumps(example(t.get("parameters", {}), self.prompt)).decode() for t in tools)
        return tuple(zip((t["name"] for t in tools), args, strict=True))

    def text_for(self, index: int) -> tuple[str, str]:
        """The choice's text and finish reason, after stop sequences and the token limit."""
        text = self.base if index == 0 else f"{self.base} (choice {index + 1})"
        reason = "stop"
        for stop in self.stop:
            if stop and stop in text:
                text = text[: text.index(stop)]
        if self.limit is not None and not self.calls and len(tokens(text)) > self.limit:
            text = "".join(tokens(text)[: self.limit])
            reason = "length"
        if self.calls:
            forced_by_name = isinstance(self.body.get("tool_choice"), dict)
            reason = "stop" if forced_by_name and self.reply.tool_calls is None else "tool_calls"
        return text, self.reply.finish_reason or reason

    def logprobs(self, text: str) -> list[dict[str, Any]]:
        scripted = self.reply.logprobs
        pairs = list(scripted) if scripted is not None else [
            (token, -0.05 * (i % 5 + 1)) for i, token in enumerate(tokens(text))
        ]  # fmt: skip
        return [
            {
                "token": token,
                "logprob": logprob,
                "bytes": list(token.encode()),
                "top_logprobs": [
                    {
                        "token": token if j == 0 else f"{token}#{j}",
                        "logprob": logprob - j,
                        "bytes": list(token.encode()),
                    }
                    for j in range(self.top)
                ],
            }
            for token, logprob in pairs
        ]

    def usage(self) -> dict[str, Any]:
        prompt = 3 + sum(4 + len(tokens(_text_of(m.get("content")))) for m in self.body["messages"])
        prompt += sum(len(tokens(orjson.dumps(t).decode())) for t in self.body.get("tools", []))
        completion = sum(self._output_tokens(i) for i in range(self.n))
        completion += self.reply.reasoning_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": self.reply.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reply.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _output_tokens(self, index: int) -> int:
        if self.calls:
            return sum(len(tokens(args)) + 3 for _, _, args in self.calls)
        text, _ = self.text_for(index)
        return len(tokens(self.reply.refusal or text))

    def choice_deltas(self, index: int) -> list[dict[str, Any]]:
        """One choice's stream: role first, then content/refusal/tool-call pieces, then finish."""
        text, reason = self.text_for(index)
        first: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
        if self.calls:
            first["content"] = None
        out = [{"index": index, "delta": first, "logprobs": None, "finish_reason": None}]
        if self.reply.refusal is not None:
            pieces = [{"refusal": piece} for piece in tokens(self.reply.refusal)]
            out += [_piece(index, p) for p in pieces]
        elif self.calls:
            for k, (call_id, name, args) in enumerate(self.calls):
                opening = {"index": k, "id": call_id, "type": "function",
                           "function": {"name": name, "arguments": ""}}  # fmt: skip
                out.append(_piece(index, {"tool_calls": [opening]}))
                for part in _split(args, 8):
                    piece = {"tool_calls": [{"index": k, "function": {"arguments": part}}]}
                    out.append(_piece(index, piece))
        else:
            logprobs = self.logprobs(text) if self.wants_logprobs else None
            scripted = self.reply.logprobs
            pieces = tokens(text) if scripted is None else [token for token, _ in scripted]
            for i, token in enumerate(pieces):
                item = _piece(index, {"content": token})
                if logprobs is not None:
                    item["logprobs"] = {"content": [logprobs[i]], "refusal": None}
                out.append(item)
        out.append({"index": index, "delta": {}, "logprobs": None, "finish_reason": reason})
        return out

    def chunk(self, choices: list[dict[str, Any]], include_usage: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
            "obfuscation": "x" * (1 + len(choices)),
        }
        if include_usage:
            out["usage"] = None
        return out


def _piece(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}


def _split(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""
