"""Google Gemini's generateContent API (Gemini Developer API, `v1beta`): pure translation.

Requests: messages become `contents` (roles `user` / `model`) of `parts`; system text becomes
`systemInstruction`; tools become `functionDeclarations` with their JSON Schema passed as
`parametersJsonSchema` (no lossy conversion to the OpenAPI subset); tool results become
`functionResponse` parts named after the call they answer.

Answers: a candidate is a choice. Gemini gives function calls no id, so one is generated; when
the part carries a `thoughtSignature` (Gemini 3 requires it back on the next turn) it rides in
the id after `SIGNATURE_MARK`, so the caller returns it with the tool result without knowing.
Thinking tokens (`thoughtsTokenCount`) are billed as output, so they are counted in
`output_tokens` and reported again in `reasoning_tokens`. Streams are full response objects per
SSE event with no terminal marker: the stream is done once every candidate has finished and
usage has arrived. Errors come from `gemini_errors`.
"""

from __future__ import annotations

import base64
import mimetypes
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from modelyard.cost.prices import estimate_tokens
from modelyard.errors import BadRequestError, BadResponseError, ModelError
from modelyard.providers.gemini_errors import (
    FILTERED,
    api_error,
    error_from_wire,
    filtered_error,
    finish_error,
)
from modelyard.providers.headers import RateLimitInfo
from modelyard.providers.sse import Event
from modelyard.providers.wire import ParsedEmbeddings, ParsedResponse, body_excerpt, require
from modelyard.types import (
    ChatRequest,
    Choice,
    Chunk,
    EmbeddingRequest,
    FinishReason,
    ImagePart,
    Message,
    Part,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)

SIGNATURE_MARK = "~sig~"
"""Separates a generated tool call id from the thought signature it carries (never in base64)."""

_TOOL_CHOICE = {"auto": "AUTO", "none": "NONE", "required": "ANY"}


def _resource(model_id: str) -> str:
    """`models/<id>`, or the id as given when it already names a resource (`tunedModels/x`)."""
    return model_id if "/" in model_id else f"models/{model_id}"


# --- requests ---------------------------------------------------------------------------------


def _image(part: ImagePart) -> dict[str, Any]:
    url = part.url
    if url.startswith("data:"):
        header, sep, payload = url[5:].partition(",")
        if not sep:
            raise BadRequestError("image data: URI has no ',' before its data")
        mime, _, encoding = header.partition(";")
        if encoding == "base64":
            data = payload
        else:
            data = base64.b64encode(unquote_to_bytes(payload)).decode()
        return {"inlineData": {"mimeType": mime or "application/octet-stream", "data": data}}
    file_data: dict[str, Any] = {"fileUri": url}
    guessed = mimetypes.guess_type(url.split("?", 1)[0])[0]
    if guessed:
        file_data["mimeType"] = guessed
    return {"fileData": file_data}


def _parts(content: str | tuple[Part, ...]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    return [
        _image(part) if isinstance(part, ImagePart) else {"text": part.text} for part in content
    ]


def split_call_id(call_id: str) -> tuple[str, str | None]:
    """A tool call id and the thought signature packed into it, if any."""
    base, sep, signature = call_id.partition(SIGNATURE_MARK)
    return base, (signature if sep and signature else None)


def _call_part(call: ToolCall) -> dict[str, Any]:
    try:
        args = orjson.loads(call.arguments) if call.arguments.strip() else {}
    except orjson.JSONDecodeError:
        args = None
    if not isinstance(args, dict):
        raise BadRequestError(
            f"tool call {call.id!r} ({call.name}) has arguments that are not a JSON object: "
            f"{call.arguments[:80]!r}; Gemini needs an object"
        )
    part: dict[str, Any] = {"functionCall": {"name": call.name, "args": args}}
    _, signature = split_call_id(call.id)
    if signature:
        part["thoughtSignature"] = signature
    return part


def _tool_result(text: str) -> dict[str, Any]:
    """Gemini wants an object; anything else is wrapped as its documented `output` key."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"output": text}
    return value if isinstance(value, dict) else {"output": value}


def _tool_response(message: Message, names: Mapping[str, str], position: int) -> dict[str, Any]:
    name = names.get(message.tool_call_id or "") or message.name
    if not name:
        raise BadRequestError(
            f"messages[{position}]: tool result for call {message.tool_call_id!r} matches no "
            "earlier assistant tool call, and Gemini needs the function's name; set `name`"
        )
    return {"functionResponse": {"name": name, "response": _tool_result(message.text)}}


def _contents(request: ChatRequest) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(contents, systemInstruction parts)."""
    system = [{"text": request.system}] if request.system else []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for position, message in enumerate(request.messages):
        if message.role == "system":
            system.append({"text": message.text})
        elif message.role == "assistant":
            parts = [{"text": message.text}] if message.text else []
            for call in message.tool_calls:
                names[call.id] = call.name
                parts.append(_call_part(call))
            if parts:
                contents.append({"role": "model", "parts": parts})
        elif message.role == "tool":
            part = _tool_response(message, names, position)
            last = contents[-1] if contents else None
            # Answers to parallel calls go back together in one turn, as Gemini expects.
            if last and last["role"] == "user" and "functionResponse" in last["parts"][-1]:
                last["parts"].append(part)
            else:
                contents.append({"role": "user", "parts": [part]})
        else:
            contents.append({"role": "user", "parts": _parts(message.content)})
    if not contents:
        raise BadRequestError("the request has no user, assistant or tool message to send")
    return contents, system


def _declaration(tool: Tool) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": tool.name}
    if tool.description:
        declaration["description"] = tool.description
    if tool.parameters and tool.parameters.get("properties") != {}:
        declaration["parametersJsonSchema"] = dict(tool.parameters)
    return declaration


def _tool_config(request: ChatRequest) -> dict[str, Any]:
    choice = request.tool_choice
    assert choice is not None
    if choice in _TOOL_CHOICE:
        return {"functionCallingConfig": {"mode": _TOOL_CHOICE[choice]}}
    if choice not in {tool.name for tool in request.tools}:
        raise BadRequestError(f"tool_choice names {choice!r}, which is not among the tools")
    return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice]}}


def _generation_config(request: ChatRequest) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.max_tokens is not None:
        config["maxOutputTokens"] = request.max_tokens
    if request.stop:
        config["stopSequences"] = list(request.stop)
    if request.seed is not None:
        config["seed"] = request.seed
    if request.n > 1:
        config["candidateCount"] = request.n
    if request.logprobs:
        config["responseLogprobs"] = True
        if request.top_logprobs:
            config["logprobs"] = request.top_logprobs
    fmt = request.response_format
    if fmt is not None and fmt.type != "text":
        config["responseMimeType"] = "application/json"
        if fmt.type == "json_schema" and fmt.schema:
            config["responseJsonSchema"] = dict(fmt.schema)
    return config


def to_wire(request: ChatRequest) -> dict[str, Any]:
    """The GenerateContentRequest body for `request` (the model goes in the URL)."""
    contents, system = _contents(request)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    if request.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(t) for t in request.tools]}]
        if request.tool_choice is not None:
            body["toolConfig"] = _tool_config(request)
    config = _generation_config(request)
    if config:
        body["generationConfig"] = config
    return body


# --- answers ----------------------------------------------------------------------------------


def _count(meta: Mapping[str, Any], key: str) -> int:
    value = meta.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadResponseError(f"usageMetadata.{key} is {value!r}, expected an integer")
    return value


def usage_from_wire(meta: Any) -> Usage:
    """Usage from `usageMetadata`; thinking tokens are output (billed so) and reasoning."""
    if not isinstance(meta, dict):
        raise BadResponseError(f"usageMetadata is {type(meta).__name__}, expected an object")
    thoughts = _count(meta, "thoughtsTokenCount")
    return Usage(
        input_tokens=_count(meta, "promptTokenCount") + _count(meta, "toolUsePromptTokenCount"),
        output_tokens=_count(meta, "candidatesTokenCount") + thoughts,
        cached_tokens=_count(meta, "cachedContentTokenCount"),
        reasoning_tokens=thoughts,
    )


def _logprobs(candidate: Mapping[str, Any]) -> tuple[TokenLogprob, ...]:
    result = candidate.get("logprobsResult")
    if not isinstance(result, dict):
        return ()
    chosen = result.get("chosenCandidates") or []
    tops = result.get("topCandidates") or []
    out = []
    for step, token in enumerate(chosen):
        alternatives = tops[step].get("candidates", []) if step < len(tops) else []
        out.append(
            TokenLogprob(
                token=str(token.get("token", "")),
                logprob=float(token.get("logProbability", 0.0)),
                top=tuple(
                    (str(t.get("token", "")), float(t.get("logProbability", 0.0)))
                    for t in alternatives
                ),
            )
        )
    return tuple(out)


def _new_call_id(part: Mapping[str, Any]) -> str:
    call_id = f"call_{uuid.uuid4().hex[:24]}"
    signature = part.get("thoughtSignature")
    return call_id + SIGNATURE_MARK + signature if isinstance(signature, str) else call_id


def _content(candidate: Mapping[str, Any], where: str) -> tuple[str, list[ToolCall]]:
    """The candidate's answer text (thought summaries left out) and its function calls."""
    content = candidate.get("content")
    if content is None:
        return "", []
    parts = require(content, "parts", list, f"{where}.content") if "parts" in content else []
    texts: list[str] = []
    calls: list[ToolCall] = []
    for i, part in enumerate(parts):
        if not isinstance(part, dict):
            raise BadResponseError(f"{where}.content.parts[{i}] is not an object")
        if "functionCall" in part:
            call = part["functionCall"]
            name = require(call, "name", str, f"{where}.content.parts[{i}].functionCall")
            args = call.get("args") or {}
            calls.append(
                ToolCall(id=_new_call_id(part), name=name, arguments=orjson.dumps(args).decode())
            )
        elif isinstance(part.get("text"), str) and not part.get("thought"):
            texts.append(part["text"])
    return "".join(texts), calls


def _finish(candidate: Mapping[str, Any], has_calls: bool) -> FinishReason:
    """Our finish reason for a candidate's `finishReason`; raises for the ones that are errors."""
    reason = candidate.get("finishReason")
    if reason == "STOP":
        return FinishReason.TOOL_CALLS if has_calls else FinishReason.STOP
    if reason in ("MAX_TOKENS", "CONTINUATION"):
        return FinishReason.LENGTH
    if reason in FILTERED:
        return FinishReason.CONTENT_FILTER
    raise finish_error(reason, candidate)


def _blocked(body: Mapping[str, Any]) -> ModelError:
    feedback = body.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        return filtered_error(feedback, prompt=True)
    return BadResponseError(f"response has no candidates: {body_excerpt(orjson.dumps(body))}")


def from_wire(body: Any) -> ParsedResponse:
    """A GenerateContentResponse, translated; raises for blocks, filters and broken answers."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        raise api_error(int(body["error"].get("code") or 500), body["error"], {})
    if not isinstance(body, dict):
        raise BadResponseError(f"expected a JSON object, got {type(body).__name__}")
    candidates = body.get("candidates")
    if not candidates:
        raise _blocked(body)
    if not isinstance(candidates, list):
        raise BadResponseError("field candidates is not a list")
    choices = []
    texts = []
    for position, candidate in enumerate(candidates):
        where = f"candidates[{position}]"
        if not isinstance(candidate, dict):
            raise BadResponseError(f"{where} is not an object")
        text, calls = _content(candidate, where)
        texts.append(text)
        logprobs = _logprobs(candidate)
        choices.append(
            Choice(
                index=int(candidate.get("index", position)),
                message=Message(role="assistant", content=text, tool_calls=tuple(calls)),
                finish_reason=_finish(candidate, bool(calls)),
                logprobs=logprobs or None,
            )
        )
    if all(c.finish_reason is FinishReason.CONTENT_FILTER for c in choices):
        raise filtered_error(candidates[0], prompt=False)
    if "usageMetadata" in body:
        usage = usage_from_wire(body["usageMetadata"])
    else:
        usage = Usage(output_tokens=sum(estimate_tokens(t) for t in texts), estimated=True)
    return ParsedResponse(
        id=str(body.get("responseId") or ""),
        provider_model=str(body.get("modelVersion") or ""),
        choices=tuple(sorted(choices, key=lambda c: c.index)),
        usage=usage,
    )


class GeminiStreamDecoder:
    """Turns streamGenerateContent SSE events (each a full response object) into chunks."""

    def __init__(self) -> None:
        self.done = False
        self.usage: Usage | None = None
        self.provider_model: str | None = None
        self.response_id: str | None = None
        self._finished: dict[int, Mapping[str, Any] | None] = {}
        """Per candidate index: None while open, the finishing candidate once it finished."""
        self._calls: dict[int, int] = {}
        self._filtered: dict[int, Mapping[str, Any]] = {}

    def feed(self, event: Event) -> Sequence[Chunk]:
        """The chunks one event carries."""
        try:
            body = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise BadResponseError(
                f"malformed stream event, not JSON: {body_excerpt(event.data.encode())!r}"
            ) from None
        if not isinstance(body, dict):
            raise BadResponseError(f"stream event is {type(body).__name__}, expected an object")
        if isinstance(body.get("error"), dict):
            raise api_error(int(body["error"].get("code") or 500), body["error"], {})
        self.provider_model = body.get("modelVersion") or self.provider_model
        self.response_id = body.get("responseId") or self.response_id
        if "usageMetadata" in body:
            self.usage = usage_from_wire(body["usageMetadata"])
        candidates = body.get("candidates")
        if not candidates:
            feedback = body.get("promptFeedback")
            if isinstance(feedback, dict) and feedback.get("blockReason"):
                raise filtered_error(feedback, prompt=True)
            self._settle()  # a usage-only event
            return ()
        if not isinstance(candidates, list):
            raise BadResponseError("stream event field candidates is not a list")
        chunks = [self._chunk(c, position) for position, c in enumerate(candidates)]
        self._settle()
        return chunks

    def _chunk(self, candidate: Any, position: int) -> Chunk:
        where = f"stream candidates[{position}]"
        if not isinstance(candidate, dict):
            raise BadResponseError(f"{where} is not an object")
        index = int(candidate.get("index", position))
        self._finished.setdefault(index, None)
        text, calls = _content(candidate, where)
        first = self._calls.get(index, 0)
        self._calls[index] = first + len(calls)
        finish = None
        if candidate.get("finishReason"):
            finish = _finish(candidate, self._calls[index] > 0)
            self._finished[index] = candidate
            if finish is FinishReason.CONTENT_FILTER:
                self._filtered[index] = candidate
        return Chunk(
            index=index,
            text=text,
            tool_calls=tuple(
                ToolCallDelta(index=first + i, id=c.id, name=c.name, arguments=c.arguments)
                for i, c in enumerate(calls)
            ),
            finish_reason=finish,
            logprobs=_logprobs(candidate),
        )

    def _settle(self) -> None:
        if not self._finished or any(c is None for c in self._finished.values()):
            return
        if len(self._filtered) == len(self._finished):
            raise filtered_error(next(iter(self._filtered.values())), prompt=False)
        self.done = self.usage is not None


# --- embeddings -------------------------------------------------------------------------------


def embeddings_to_wire(request: EmbeddingRequest, model_id: str) -> dict[str, Any]:
    """The batchEmbedContents body: one request per input."""
    resource = _resource(model_id)
    requests = []
    for text in request.inputs:
        item: dict[str, Any] = {"model": resource, "content": {"parts": [{"text": text}]}}
        if request.dimensions is not None:
            item["outputDimensionality"] = request.dimensions
        requests.append(item)
    return {"requests": requests}


def embeddings_from_wire(body: Any) -> ParsedEmbeddings:
    """The vectors of a batchEmbedContents answer; Gemini reports no usage (estimated later)."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        raise api_error(int(body["error"].get("code") or 500), body["error"], {})
    embeddings = require(body, "embeddings", list, "response")
    vectors = []
    for i, item in enumerate(embeddings):
        values = require(item, "values", list, f"embeddings[{i}]")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise BadResponseError(f"embeddings[{i}].values holds a non-number")
        vectors.append(tuple(float(v) for v in values))
    usage = Usage(estimated=True)
    if isinstance(body.get("usageMetadata"), dict):
        usage = Usage(input_tokens=_count(body["usageMetadata"], "promptTokenCount"))
    return ParsedEmbeddings(provider_model="", vectors=tuple(vectors), usage=usage)


class GeminiWire:
    """The WireFormat (and EmbeddingWireFormat) of the Gemini Developer API."""

    name = "gemini"
    requires_max_tokens = False

    def url(self, base_url: str, model_id: str, *, stream: bool) -> str:
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{base_url.rstrip('/')}/{_resource(model_id)}:{method}"

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-goog-api-key": api_key}

    def default_headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json"}

    def to_wire(self, request: ChatRequest, model_id: str, *, stream: bool) -> dict[str, Any]:
        return to_wire(request)

    def from_wire(self, body: Any) -> ParsedResponse:
        return from_wire(body)

    def stream_decoder(self) -> GeminiStreamDecoder:
        return GeminiStreamDecoder()

    def error_from_wire(self, status: int, headers: Mapping[str, str], body: bytes) -> ModelError:
        return error_from_wire(status, headers, body)

    def rate_limits(self, headers: Mapping[str, str]) -> RateLimitInfo:
        """Gemini sends no quota headers."""
        return RateLimitInfo()

    def embeddings_url(self, base_url: str, model_id: str) -> str:
        return f"{base_url.rstrip('/')}/{_resource(model_id)}:batchEmbedContents"

    def embeddings_to_wire(self, request: EmbeddingRequest, model_id: str) -> dict[str, Any]:
        return embeddings_to_wire(request, model_id)

    def embeddings_from_wire(self, body: Any) -> ParsedEmbeddings:
        return embeddings_from_wire(body)


WIRE = GeminiWire()
