"""A fake of Google's Gemini Developer API on a real 127.0.0.1 socket.

Serves `POST /{v1beta,v1}/models/{model}:generateContent`, `:streamGenerateContent` (SSE with
`?alt=sse`, a JSON array without it) and `:batchEmbedContents` with the real camelCase JSON:
candidates, usageMetadata, modelVersion, responseId, promptFeedback blocks, safety ratings,
function calls, logprobs, and Google RPC error bodies (RetryInfo, ErrorInfo, QuotaFailure).
What it answers is scripted per request with `answer(GeminiAnswer(...))`; the shared `Fault`s
(tests/fakes/server.py) work as for every fake. Gemini's stream has no terminal marker, so
`Fault(no_final=True)` leaves out the chunk carrying finishReason and the final usage. A
content filter's stop streams as Gemini streams it: the text so far, then a chunk whose candidate
has the finishReason and no content.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.server import FakeUpstream

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_MESSAGES = {
    "INVALID_ARGUMENT": "Request contains an invalid argument.",
    "FAILED_PRECONDITION": "User location is not supported for the API use.",
    "UNAUTHENTICATED": "Request had invalid authentication credentials.",
    "NOT_FOUND": "models/{model} is not found for API version v1beta, or is not supported "
    "for generateContent. Call ListModels to see the list of available models.",
    "RESOURCE_EXHAUSTED": "You exceeded your current quota, please check your plan and billing "
    "details. For more information on this error, head to: "
    "https://ai.google.dev/gemini-api/docs/rate-limits.",
    "INTERNAL": "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    "UNAVAILABLE": "The model is overloaded. Please try again later.",
    "DEADLINE_EXCEEDED": "Deadline expired before operation could complete.",
}

_FIELDS = {
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "generationConfig",
    "safetySettings",
    "cachedContent",
}
_FILTERS = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}


@dataclass(frozen=True, kw_only=True)
class GeminiAnswer:
    """What the fake answers to one request (the default echoes the last user text)."""

    text: str | None = None
    calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    finish_reason: str = "STOP"
    finish_message: str | None = None
    block_reason: str | None = None
    """Block the prompt: promptFeedback.blockReason and no candidates."""
    category: str = "HARM_CATEGORY_DANGEROUS_CONTENT"
    """The harm category a filter or block names."""
    thought_signature: str | None = None
    thoughts_tokens: int = 0
    cached_tokens: int = 0
    usage: bool = True
    usage_every_chunk: bool = True
    """Streams: cumulative usageMetadata on every chunk (as Gemini 2.x sends), else the last."""
    model_version: str | None = None
    error_after: int | None = None
    """Streams: after this many chunks send an in-band `error` event and end."""
    error_status: int = 500


def frame(payload: Any) -> bytes:
    """One SSE event as Gemini frames it (CRLF line ends)."""
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"


class FakeGemini(FakeUpstream):
    """The Gemini-shaped fake upstream."""

    def __init__(self, *, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.retry_delay = "17s"
        """What a 429 body's RetryInfo says."""
        self.answers: deque[GeminiAnswer] = deque()
        self._ids = 0

    def reset(self) -> None:
        """Forget requests, faults and scripted answers; 429s say the default retry delay."""
        super().reset()
        self.answers.clear()
        self.retry_delay = "17s"

    def script(self, *answers: GeminiAnswer) -> None:
        """Script the answers to the next requests, one each, in order."""
        self.answers.extend(answers)

    # --- routing -----------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/{version}/{kind}/{target}", self._route)]

    async def _route(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["target"].partition(":")[2]
        known = {"generateContent", "streamGenerateContent", "batchEmbedContents"}
        if method not in known or request.match_info["kind"] not in ("models", "tunedModels"):
            return self._error(404, "NOT_FOUND", f"Method {method!r} not found.")
        return await self.handle(request, method)

    def _error(self, status: int, kind: str, message: str | None) -> web.Response:
        return web.Response(
            status=status,
            body=orjson.dumps(self.error_body(status, kind, message)),
            content_type="application/json",
        )

    def is_stream(self, kind: str, request: web.Request, body: Any) -> bool:
        return kind == "streamGenerateContent" and request.query.get("alt") == "sse"

    # --- answers -----------------------------------------------------------------------------

    def _next(self) -> GeminiAnswer:
        return self.answers.popleft() if self.answers else GeminiAnswer()

    def _model(self, request: web.Request) -> str:
        return request.match_info["target"].partition(":")[0]

    def answer(self, kind: str, request: web.Request, body: Any) -> Any:
        if kind == "batchEmbedContents":
            return self._embeddings(body)
        answer = self._next()
        if kind == "streamGenerateContent":
            content, final = self._chunks(answer, request, body)
            return content + final
        return self._response(answer, request, body)

    def _invalid(self, kind: str, request: web.Request, body: Any) -> str | None:
        """What the real API would reject in this request, as its 400 message."""
        if not isinstance(body, dict):
            return "Invalid JSON payload received."
        if kind == "batchEmbedContents":
            expected = f"models/{self._model(request)}"
            for item in body.get("requests", []):
                if item.get("model") != expected:
                    return (
                        f"Model {item.get('model')!r} in a batch request does not match the "
                        f"model {expected!r} in the URL."
                    )
            return None
        unknown = sorted(set(body) - _FIELDS)
        if unknown:
            return f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.'
        contents = body.get("contents")
        if not contents:
            return "* GenerateContentRequest.contents: contents is not specified"
        for i, content in enumerate(contents):
            if content.get("role") not in ("user", "model") or not content.get("parts"):
                return (
                    f"* GenerateContentRequest.contents[{i}]: role must be user or model and "
                    "parts must not be empty"
                )
        return None

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        out = []
        for item in body["requests"]:
            text = "".join(p.get("text", "") for p in item["content"]["parts"])
            size = item.get("outputDimensionality") or 8
            digest = hashlib.sha256(text.encode()).digest()
            out.append({"values": [round(digest[i % 32] / 255 - 0.5, 6) for i in range(size)]})
        return {"embeddings": out}

    def _text(self, answer: GeminiAnswer, body: dict[str, Any]) -> str:
        if answer.text is not None:
            return answer.text
        last = ""
        for content in body["contents"]:
            if content["role"] == "user":
                texts = [p["text"] for p in content["parts"] if "text" in p]
                last = " ".join(texts) or last
        return f"Gemini heard: {last}" if last else ""

    def _usage(self, answer: GeminiAnswer, body: dict[str, Any], produced: int) -> dict[str, Any]:
        prompt = max(1, len(orjson.dumps(body.get("contents", []))) // 4)
        usage: dict[str, Any] = {
            "promptTokenCount": prompt + answer.cached_tokens,
            "candidatesTokenCount": produced,
            "totalTokenCount": prompt + answer.cached_tokens + produced + answer.thoughts_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
        }
        if answer.cached_tokens:
            usage["cachedContentTokenCount"] = answer.cached_tokens
        if answer.thoughts_tokens:
            usage["thoughtsTokenCount"] = answer.thoughts_tokens
        return usage

    def _response_id(self) -> str:
        self._ids += 1
        return f"fake-gemini-{self._ids:06d}"

    def _candidate_count(self, body: dict[str, Any]) -> int:
        return int(body.get("generationConfig", {}).get("candidateCount", 1))

    def _ratings(self, answer: GeminiAnswer, blocked: bool) -> list[dict[str, Any]]:
        return [
            {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
            {"category": answer.category, "probability": "HIGH", "blocked": blocked},
        ]

    def _parts(self, answer: GeminiAnswer, text: str) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = [{"text": text}] if text else []
        for number, (name, args) in enumerate(answer.calls):
            part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
            if answer.thought_signature and number == 0:
                part["thoughtSignature"] = answer.thought_signature
            parts.append(part)
        return parts or [{"text": ""}]

    def _logprobs(self, text: str, body: dict[str, Any]) -> dict[str, Any] | None:
        config = body.get("generationConfig", {})
        if not config.get("responseLogprobs"):
            return None
        words = re.findall(r"\S+\s*", text)
        top = int(config.get("logprobs", 0))
        result: dict[str, Any] = {
            "chosenCandidates": [
                {"token": w, "logProbability": -0.25 * (i + 1)} for i, w in enumerate(words)
            ],
        }
        if top:
            result["topCandidates"] = [
                {
                    "candidates": [
                        {"token": w, "logProbability": -0.25 * (i + 1) - k} for k in range(top)
                    ]
                }
                for i, w in enumerate(words)
            ]
        return result

    def _response(
        self, answer: GeminiAnswer, request: web.Request, body: dict[str, Any]
    ) -> dict[str, Any]:
        text = self._text(answer, body)
        out: dict[str, Any] = {
            "modelVersion": answer.model_version or self._model(request),
            "responseId": self._response_id(),
        }
        produced = len(re.findall(r"\S+", text)) + 5 * len(answer.calls)
        if answer.usage:
            out["usageMetadata"] = self._usage(answer, body, 0 if answer.block_reason else produced)
        if answer.block_reason:
            out["promptFeedback"] = {
                "blockReason": answer.block_reason,
                "safetyRatings": self._ratings(answer, blocked=True),
            }
            return out
        candidates = []
        for index in range(self._candidate_count(body)):
            candidate_text = text if index == 0 or not text else f"{text} (#{index})"
            candidate: dict[str, Any] = {
                "content": {"parts": self._parts(answer, candidate_text), "role": "model"},
                "finishReason": answer.finish_reason,
                "index": index,
            }
            if answer.finish_reason in _FILTERS:
                candidate["safetyRatings"] = self._ratings(answer, blocked=True)
            if answer.finish_message:
                candidate["finishMessage"] = answer.finish_message
            logprobs = self._logprobs(candidate_text, body)
            if logprobs is not None:
                candidate["logprobsResult"] = logprobs
                candidate["avgLogprobs"] = -0.5
            candidates.append(candidate)
        out["candidates"] = candidates
        return out

    def _chunks(
        self, answer: GeminiAnswer, request: web.Request, body: dict[str, Any]
    ) -> tuple[list[Any], list[Any]]:
        """(content chunks, the final chunk with finishReason and usage) as JSON objects."""
        whole = self._response(answer, request, body)
        if "promptFeedback" in whole:
            return [whole], []
        base = {"modelVersion": whole["modelVersion"], "responseId": whole["responseId"]}
        text = self._text(answer, body)
        units: list[list[dict[str, Any]]] = [[{"text": w}] for w in re.findall(r"\S+\s*", text)]
        calls = [p for p in self._parts(answer, "") if "functionCall" in p]
        if calls:
            units.append(calls)
        if not units:
            units.append([{"text": ""}])
        if answer.finish_reason in _FILTERS:
            units.append([])  # a filter's stop comes in a chunk of its own, its content empty
        count = self._candidate_count(body)
        chunks: list[Any] = []
        produced = 0
        for number, unit in enumerate(units):
            produced += len(unit)
            last = number == len(units) - 1
            chunk: dict[str, Any] = {**base, "candidates": []}
            for index in range(count):
                parts = unit
                if index and last and unit and "text" in unit[0] and unit[0]["text"]:
                    parts = [{"text": unit[0]["text"] + f" (#{index})"}]
                candidate: dict[str, Any] = {"index": index}
                if parts:
                    candidate["content"] = {"parts": parts, "role": "model"}
                if last:
                    source = whole["candidates"][index]
                    for key in ("finishReason", "safetyRatings", "finishMessage"):
                        if key in source:
                            candidate[key] = source[key]
                chunk["candidates"].append(candidate)
            if answer.usage and (last or answer.usage_every_chunk):
                chunk["usageMetadata"] = self._usage(answer, body, produced)
            chunks.append(chunk)
        if answer.error_after is not None:
            status = answer.error_status
            error = self.error_body(status, None, None)
            return [*chunks[: answer.error_after], error], []
        return chunks[:-1], chunks[-1:]

    # --- what the base class calls -------------------------------------------------------------

    async def handle(self, request: web.Request, kind: str) -> web.StreamResponse:
        """Reject what the real API would reject (bad key, bad body), then serve as usual."""
        if self.api_key is not None and request.headers.get("x-goog-api-key") != self.api_key:
            return self._error(400, "API_KEY_INVALID", None)
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        problem = self._invalid(kind, request, body)
        if problem is not None:
            return self._error(400, "INVALID_ARGUMENT", problem)
        return await super().handle(request, kind)

    def events(self, kind: str, request: web.Request, body: Any) -> tuple[list[bytes], list[bytes]]:
        content, final = self._chunks(self._next(), request, body)
        return [frame(c) for c in content], [frame(c) for c in final]

    def error_event(self) -> bytes:
        """An `{"error": ...}` frame with a 503, as Gemini ends a stream that failed part-way."""
        return frame(self.error_body(503, None, None))

    def error_body(
        self, status: int, error_type: str | None, message: str | None
    ) -> dict[str, Any]:
        name = STATUS_NAMES.get(status, "UNKNOWN")
        details: list[dict[str, Any]] = []
        if error_type == "API_KEY_INVALID":
            message = message or "API key not valid. Please pass a valid API key."
            details = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                },
                {
                    "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                    "locale": "en-US",
                    "message": message,
                },
            ]
        elif error_type == "context_length":
            message = message or (
                "The input token count (1200000) exceeds the maximum number of tokens "
                "allowed (1048576)."
            )
        elif error_type:
            name = error_type
        if name == "PERMISSION_DENIED" and message is None:
            key = self.requests[-1].headers.get("x-goog-api-key", "") if self.requests else ""
            message = f"Permission denied: Consumer 'api_key:{key}' has been suspended."
        if name == "RESOURCE_EXHAUSTED":
            details = [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": "generativelanguage.googleapis.com/"
                            "generate_content_paid_tier_input_token_count",
                            "quotaId": "GenerateContentPaidTierInputTokensPerModelPerMinute",
                            "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"},
                            "quotaValue": "1000000",
                        }
                    ],
                },
                {
                    "@type": "type.googleapis.com/google.rpc.Help",
                    "links": [
                        {
                            "description": "Learn more about Gemini API quotas",
                            "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                        }
                    ],
                },
            ]
            if self.retry_delay:
                details.append(
                    {
                        "@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": self.retry_delay,
                    }
                )
        if message is None:
            model = "unknown"
            if self.requests:
                model = self.requests[-1].path.rsplit("/", 1)[-1].partition(":")[0]
            message = _MESSAGES.get(name, "Unknown error.").replace("{model}", model)
        error: dict[str, Any] = {"code": status, "message": message, "status": name}
        if details:
            error["details"] = details
        return {"error": error}
