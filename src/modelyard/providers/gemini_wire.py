"""Google Gemini's generateContent API (Gemini Developer API, `v1beta`): pure translation.

Requests: messages become `contents` (roles `user` / `model`) of `parts`; system text becomes
`systemInstruction` (system messages too, wherever they stand: Gemini has no system turn, so
a mid-conversation one is appended to the instruction, in order); tools become
`functionDeclarations` with their JSON Schema passed as `parametersJsonSchema` (no lossy
conversion to the OpenAPI subset); tool results become `functionResponse` parts named after
the call they answer, in one turn for parallel calls.
`metadata` (the end user it names too: OpenAI's `user` or `safety_identifier`, Anthropic's
`user_id`; generateContent has no field for one, and the request goes on without it) and
prompt-cache breakpoints (`TextPart.cache` and the like: Gemini caches implicitly, or through
cachedContents, never by markers) have no Gemini equivalent and are not sent. Nor is
`parallel_tool_calls`, which Gemini has no switch for: true is what it does anyway, and false
with tools the model may call is a BadRequestError naming it, since Gemini may answer with
several calls a caller that asked for one at a time cannot run. Nor are a message's `name`, an
image's `detail` and a tool's `strict`, hints with no Gemini field (`RemoteModel` says so in
the answer's decision: `unsent`, `request_fit`).
`ChatRequest.thinking` becomes `generationConfig.thinkingConfig.thinkingBudget`: the budget when
`enabled`, -1 (the model decides) when `adaptive`; `disabled` leaves the model's default, since
some Gemini models cannot stop thinking and refuse a budget of 0. `includeThoughts` is not
asked: thought summaries carry no signature a client could send back. Reasoning blocks in an
assistant message's history (`Message.thinking`) are another provider's, signed by it, and are
not sent. `ChatRequest.effort` is not sent: Gemini 2.5 takes only a budget and refuses
`thinkingLevel`, so the thinking setting alone decides (an `adaptive` one lets the model choose).
`context_management` is Anthropic's and never sent (`RemoteModel` drops it, and says so).
Answers are read in `gemini_answers`, errors in `gemini_errors`; `WIRE` ties them together
for `RemoteModel` and `RemoteEmbedder`.
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from modelyard.errors import BadRequestError, BadResponseError, ModelError
from modelyard.providers.gemini_answers import (
    GeminiStreamDecoder,
    error_status,
    from_wire,
    split_call_id,
    token_count,
)
from modelyard.providers.gemini_errors import api_error, error_from_wire
from modelyard.providers.headers import RateLimitInfo
from modelyard.providers.sse import Event
from modelyard.providers.wire import (
    ParsedEmbeddings,
    ParsedResponse,
    check_logprobs,
    check_tool_choice,
    require,
)
from modelyard.types import (
    ChatRequest,
    EmbeddingRequest,
    ImagePart,
    Message,
    Part,
    Tool,
    ToolCall,
    Usage,
)

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
    if message.has_image:  # a functionResponse holds JSON: the image would be lost unsaid
        raise BadRequestError(
            f"messages[{position}]: a tool result may hold text only for Gemini, not an image"
        )
    name = names.get(message.tool_call_id or "") or message.name
    if not name:
        raise BadRequestError(
            f"messages[{position}]: tool result for call {message.tool_call_id!r} matches no "
            "earlier assistant tool call, and Gemini needs the function's name; set `name`"
        )
    if message.tool_error:  # the key Gemini documents for a function's error
        return {"functionResponse": {"name": name, "response": {"error": message.text}}}
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
    thinking = request.thinking
    if thinking is not None and thinking.type != "disabled":
        budget = thinking.budget_tokens if thinking.type == "enabled" else None
        config["thinkingConfig"] = {"thinkingBudget": -1 if budget is None else budget}
    fmt = request.response_format
    if fmt is not None and fmt.type != "text":
        config["responseMimeType"] = "application/json"
        if fmt.type == "json_schema" and fmt.schema:
            config["responseJsonSchema"] = dict(fmt.schema)
    return config


def _check_parallel(request: ChatRequest) -> None:
    """BadRequestError naming `parallel_tool_calls` when it is false and a call may come."""
    if request.parallel_tool_calls is False and request.tools and request.tool_choice != "none":
        raise BadRequestError(
            "parallel_tool_calls: false (Messages' disable_parallel_tool_use): Gemini has no "
            "switch for it and may answer with several function calls at once; leave it out",
            code="unsupported_parameter",
            param="parallel_tool_calls",
        )


def to_wire(request: ChatRequest) -> dict[str, Any]:
    """The GenerateContentRequest body for `request` (the model goes in the URL)."""
    check_tool_choice(request)
    check_logprobs(request)
    _check_parallel(request)
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
        raise api_error(error_status(body["error"]), body["error"], {})
    embeddings = require(body, "embeddings", list, "response")
    vectors = []
    for i, item in enumerate(embeddings):
        values = require(item, "values", list, f"embeddings[{i}]")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise BadResponseError(f"embeddings[{i}].values holds a non-number")
        vectors.append(tuple(float(v) for v in values))
    usage = Usage(estimated=True)
    if isinstance(body.get("usageMetadata"), dict):
        usage = Usage(input_tokens=token_count(body["usageMetadata"], "promptTokenCount"))
    return ParsedEmbeddings(provider_model="", vectors=tuple(vectors), usage=usage)


class GeminiWire:
    """The WireFormat (and EmbeddingWireFormat) of the Gemini Developer API."""

    name = "gemini"
    requires_max_tokens = False
    unsent = frozenset({"context_management", "name", "detail", "strict"})

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

    def array_events(self, body: bytes) -> list[Event] | None:
        """`streamGenerateContent` without `alt=sse` answers one JSON array of the
        GenerateContentResponse objects its SSE events would carry: each is such an event."""
        if not body.lstrip().startswith(b"["):
            return None
        try:
            items = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not items:
            return None
        return [Event("message", orjson.dumps(item).decode()) for item in items]

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
