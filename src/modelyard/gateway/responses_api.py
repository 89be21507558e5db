"""The OpenAI Responses API (`POST /v1/responses`) as the gateway serves it, statelessly: the
conversation comes whole in `input`, as clients send it with `store: false`, and nothing is kept
to be fetched or continued later (`previous_response_id` and `store: true` are refused, saying
so). Responses JSON in, ChatRequest out; ChatResponse and chunks in, a `response` object and the
Responses streaming events out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from modelyard.errors import BadResponseError
from modelyard.gateway.errors import ApiError, bad_request
from modelyard.gateway.fields import (
    expect_list,
    expect_object,
    expect_str,
    optional_bool,
    optional_int,
    optional_number,
    optional_str,
    reject_unknown,
    shallow,
    string_map,
)
from modelyard.gateway.openai_api import (
    check_service_tier,
    function_tool,
    logprob_items,
    text_only,
    text_only_system,
)
from modelyard.types import (
    ChatRequest,
    ChatResponse,
    Chunk,
    FinishReason,
    ImagePart,
    Message,
    Part,
    ResponseFormat,
    TextPart,
    TokenLogprob,
    Tool,
    ToolCall,
    split_system,
)

_FIELDS = frozenset(
    {
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "stream",
        "stream_options",
        "metadata",
        "user",
        "store",
        "previous_response_id",
        "include",
        "top_logprobs",
        "service_tier",
    }
)
_NEUTRAL: dict[str, Any] = {
    "truncation": "disabled",
    "background": False,
    "reasoning": {},
}
_KEYS = {
    "message": frozenset({"type", "role", "content", "id", "status", "phase"}),
    "function_call": frozenset({"type", "call_id", "name", "arguments", "id", "status"}),
    "function_call_output": frozenset({"type", "call_id", "output", "id", "status"}),
    "input_text": frozenset({"type", "text"}),
    "output_text": frozenset({"type", "text", "annotations", "logprobs"}),
    "refusal": frozenset({"type", "refusal"}),
    "input_image": frozenset({"type", "image_url", "detail"}),
    "function": frozenset({"type", "name", "description", "parameters", "strict"}),
    "text": frozenset({"type"}),
    "json_object": frozenset({"type"}),
    "json_schema": frozenset({"type", "name", "schema", "strict"}),
}
"""The keys taken in each kind of input item, content part, tool and text format. What an
output item sent back says about itself (its id, status, phase, citations) changes nothing the
model is sent; any other key is refused, as OpenAI refuses an unknown parameter."""
_KEYS_NEUTRAL: dict[str, Any] = {
    "file_id": None,
    "namespace": None,
    "caller": {"type": "direct"},
    "async": False,
    "defer_loading": False,
}
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_TEXT_PARTS = frozenset({"input_text", "output_text"})
_PARTS = frozenset({*_TEXT_PARTS, "refusal", "input_image"})
_INCOMPLETE = {
    FinishReason.LENGTH: "max_output_tokens",
    FinishReason.CONTENT_FILTER: "content_filter",
}


@dataclass(frozen=True, slots=True)
class ResponsesCall:
    """A parsed Responses call, with the request's settings as the `response` object repeats
    them (`echo`)."""

    target: str
    request: ChatRequest
    stream: bool
    echo: dict[str, Any]


# --- input items ------------------------------------------------------------------------------


def _parts(content: Any, where: str) -> str | tuple[Part, ...]:
    if isinstance(content, str):
        return content
    parts: list[Part] = []
    for i, raw in enumerate(expect_list(content, where)):
        here = f"{where}[{i}]"
        part = expect_object(raw, here)
        kind = part.get("type")
        if not isinstance(kind, str) or kind not in _PARTS:  # a list or object is no kind either
            raise bad_request(
                f"{here}.type: expected input_text, output_text, refusal or input_image, "
                f"got {kind!r}",
                here,
            )
        _known_keys(part, kind, here)
        if kind in _TEXT_PARTS:
            parts.append(TextPart(text=expect_str(part.get("text"), f"{here}.text")))
        elif kind == "refusal":
            parts.append(TextPart(text=expect_str(part.get("refusal"), f"{here}.refusal")))
        else:
            if part.get("image_url") is None:
                raise bad_request(f"{here}.image_url: required (file ids are not supported)", here)
            url = expect_str(part.get("image_url"), f"{here}.image_url")
            parts.append(ImagePart(url=url, detail=optional_str(part, "detail")))
    return tuple(parts)


def _known_keys(item: dict[str, Any], kind: str, where: str) -> None:
    reject_unknown(item, _KEYS[kind], _KEYS_NEUTRAL, f"{where}.")


class _Turns:
    """Input items as messages: a run of `function_call` items joins the assistant message
    before it (parallel calls), and each `function_call_output` is a tool message."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._role: str | None = None
        self._content: str | tuple[Part, ...] = ""
        self._calls: list[ToolCall] = []

    def _flush(self) -> None:
        if self._role is not None:
            self.messages.append(
                Message(
                    role=self._role,  # type: ignore[arg-type]
                    content=self._content,
                    tool_calls=tuple(self._calls),
                )
            )
        self._role, self._content, self._calls = None, "", []

    def message(self, item: dict[str, Any], where: str) -> None:
        raw_role = item.get("role")
        role = _ROLES.get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            raise bad_request(
                f"{where}.role: expected user, assistant, system or developer, got {raw_role!r}",
                f"{where}.role",
            )
        content = _parts(item.get("content"), f"{where}.content")
        text_only_system(role, raw_role, content, where)
        self._flush()
        self._role, self._content = role, content

    def function_call(self, item: dict[str, Any], where: str) -> None:
        if self._role != "assistant":
            self._flush()
            self._role = "assistant"
        self._calls.append(
            ToolCall(
                id=expect_str(item.get("call_id"), f"{where}.call_id"),
                name=expect_str(item.get("name"), f"{where}.name"),
                arguments=expect_str(item.get("arguments", "{}"), f"{where}.arguments"),
            )
        )

    def function_output(self, item: dict[str, Any], where: str) -> None:
        self._flush()
        output = _parts(item.get("output"), f"{where}.output")
        if not text_only(output):
            raise bad_request(f"{where}.output: a function's output may hold text only", where)
        if not isinstance(output, str):
            output = "".join(part.text for part in output if isinstance(part, TextPart))
        self.messages.append(
            Message(
                role="tool",
                content=output,
                tool_call_id=expect_str(item.get("call_id"), f"{where}.call_id"),
            )
        )

    def done(self) -> list[Message]:
        self._flush()
        return self.messages


def _messages(raw: Any, max_messages: int) -> list[Message]:
    if isinstance(raw, str):
        return [Message(role="user", content=raw)]
    items = expect_list(raw, "input", non_empty=True)
    if len(items) > max_messages:
        raise bad_request(f"input: at most {max_messages} items", "input")
    turns = _Turns()
    handlers = {
        "message": turns.message,
        "function_call": turns.function_call,
        "function_call_output": turns.function_output,
    }
    for i, raw_item in enumerate(items):
        where = f"input[{i}]"
        item = expect_object(raw_item, where)
        kind = item.get("type", "message")
        take = handlers.get(kind) if isinstance(kind, str) else None
        if take is None:
            raise bad_request(
                f"{where}.type: {kind!r} is not supported: this gateway takes message, "
                "function_call and function_call_output items",
                f"{where}.type",
            )
        _known_keys(item, kind, where)
        take(item, where)
    return turns.done()


# --- settings ---------------------------------------------------------------------------------


def _tools(raw: Any) -> tuple[Tool, ...]:
    tools = []
    for i, item in enumerate(expect_list(raw, "tools")):
        tool = expect_object(item, f"tools[{i}]")
        if tool.get("type") != "function":
            raise bad_request(
                f"tools[{i}].type: only 'function' tools are supported, got {tool.get('type')!r}",
                f"tools[{i}].type",
            )
        _known_keys(tool, "function", f"tools[{i}]")
        tools.append(function_tool(tool, f"tools[{i}]"))
    return tuple(tools)


def _tool_choice(raw: Any) -> str | None:
    if raw is None or raw in ("auto", "none", "required"):
        return raw  # type: ignore[no-any-return]
    choice = expect_object(raw, "tool_choice")
    if choice.get("type") != "function":
        raise bad_request(
            "tool_choice: expected auto, none, required or {type: function, name}",
            "tool_choice",
        )
    return expect_str(choice.get("name"), "tool_choice.name")


def _format(raw: Any) -> ResponseFormat | None:
    if raw is None:
        return None
    text = expect_object(raw, "text")
    reject_unknown(text, frozenset({"format"}), {"verbosity": "medium"}, "text.")
    if text.get("format") is None:
        return None
    body = expect_object(text["format"], "text.format")
    kind = body.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise bad_request(
            f"text.format.type: expected text, json_object or json_schema, got {kind!r}",
            "text.format.type",
        )
    _known_keys(body, kind, "text.format")
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat(type="json_object")
    schema = shallow(body.get("schema"), "text.format.schema")
    return ResponseFormat(
        type="json_schema",
        schema=expect_object(schema, "text.format.schema"),
        name=expect_str(body.get("name"), "text.format.name"),
        strict=optional_bool(body, "strict"),
    )


def _stateless(body: dict[str, Any]) -> None:
    """Refuse what would need responses kept on the gateway, saying what to send instead."""
    if body.get("previous_response_id") is not None:
        raise bad_request(
            "previous_response_id: this gateway keeps no responses; send the whole "
            "conversation in input (earlier output items included)",
            "previous_response_id",
        )
    if optional_bool(body, "store"):
        raise bad_request(
            "store: this gateway keeps no responses; send store: false or leave it out",
            "store",
        )
    options = body.get("stream_options")
    if options is not None:
        reject_unknown(
            expect_object(options, "stream_options"),
            frozenset({"include_obfuscation"}),
            {},
            "stream_options.",
        )


_LOGPROBS = "message.output_text.logprobs"


def _include(body: dict[str, Any]) -> bool:
    """Whether the answer's logprobs are asked for: the one `include` this gateway can honour
    (the others name hosted tools' results and stored items)."""
    raw = body.get("include")
    if raw is None:
        return False
    for i, item in enumerate(expect_list(raw, "include")):
        if item != _LOGPROBS:
            raise bad_request(
                f"include[{i}]: {item!r} is not supported by this gateway (only {_LOGPROBS})",
                f"include[{i}]",
            )
    return bool(raw)


def parse_responses(body: Any, *, max_messages: int) -> ResponsesCall:
    """A Responses request body as a ResponsesCall; 400 naming the field otherwise."""
    body = expect_object(body, "body")
    reject_unknown(body, _FIELDS, _NEUTRAL)
    _stateless(body)
    check_service_tier(body)
    target = expect_str(body.get("model"), "model")
    if body.get("input") is None:
        raise bad_request("input: required", "input")
    system, turns = split_system(_messages(body["input"], max_messages))
    instructions = optional_str(body, "instructions")
    if instructions:
        system = instructions if system is None else f"{instructions}\n\n{system}"
    if not turns:
        raise bad_request("input: needs at least one user or assistant item", "input")
    metadata = string_map(body["metadata"], "metadata") if body.get("metadata") else {}
    user = optional_str(body, "user")
    top_logprobs = optional_int(body, "top_logprobs", 0, 20)
    request = ChatRequest(
        messages=turns,
        system=system,
        tools=_tools(body["tools"]) if body.get("tools") else (),
        tool_choice=_tool_choice(body.get("tool_choice")),
        parallel_tool_calls=optional_bool(body, "parallel_tool_calls"),
        response_format=_format(body.get("text")),
        temperature=optional_number(body, "temperature", 0, 2),
        top_p=optional_number(body, "top_p", 0, 1),
        max_tokens=optional_int(body, "max_output_tokens", 1, 10_000_000),
        logprobs=_include(body) or bool(top_logprobs),
        top_logprobs=top_logprobs or None,
        metadata={**metadata, "user": user} if user else metadata,
    )
    echo = {
        "instructions": instructions,
        "max_output_tokens": request.max_tokens,
        "metadata": metadata,
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "text": body.get("text") or {"format": {"type": "text"}},
        "store": False,
        "truncation": "disabled",
        "user": user,
        "top_logprobs": top_logprobs,
    }
    return ResponsesCall(
        target=target, request=request, stream=bool(optional_bool(body, "stream")), echo=echo
    )


# --- rendering --------------------------------------------------------------------------------


def _usage(response: ChatResponse) -> dict[str, Any]:
    usage = response.usage
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def _message_item(
    item_id: str,
    text: str,
    *,
    refused: bool,
    done: bool,
    logprobs: tuple[TokenLogprob, ...] | None = None,
) -> dict[str, Any]:
    part: dict[str, Any] = (
        {"type": "refusal", "refusal": text}
        if refused
        else {"type": "output_text", "text": text, "annotations": []}
    )
    if logprobs is not None and not refused:
        part["logprobs"] = logprob_items(logprobs)
    return {
        "type": "message",
        "id": item_id,
        "status": "completed" if done else "in_progress",
        "role": "assistant",
        "content": [part] if done else [],
    }


def _call_item(item_id: str, call: ToolCall, *, done: bool) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "status": "completed" if done else "in_progress",
    }


class ResponseShape:
    """The `response` object of one request, as each stage of it is written out."""

    def __init__(
        self,
        *,
        request_id: str,
        target: str,
        created: int,
        echo: dict[str, Any],
        logprobs: bool = False,
    ):
        self.id = f"resp_{request_id}"
        self.item_prefix = request_id
        self._head = {"id": self.id, "object": "response", "created_at": created, "model": target}
        self._echo = echo
        self.logprobs = logprobs
        """Whether the answer's logprobs were asked for (they go in its text part)."""

    def render(self, output: list[dict[str, Any]], response: ChatResponse | None) -> dict[str, Any]:
        """The object with these output items; in progress until `response` has ended it."""
        status, incomplete = "in_progress", None
        if response is not None:
            # A refusal is a whole answer (its content part says so); a filter's cut is not.
            reason = None if _refused(response) else _INCOMPLETE.get(response.finish_reason)
            status = "completed" if reason is None else "incomplete"
            incomplete = None if reason is None else {"reason": reason}
        return {
            **self._head,
            "status": status,
            "error": None,
            "incomplete_details": incomplete,
            "output": output,
            "usage": None if response is None else _usage(response),
            **self._echo,
        }

    def output(self, response: ChatResponse) -> list[dict[str, Any]]:
        """A whole answer's output items: its text (unless it only called tools), then its
        calls."""
        message = response.message
        items: list[dict[str, Any]] = []
        if message.text or not message.tool_calls:
            items.append(
                _message_item(
                    f"msg_{self.item_prefix}",
                    message.text,
                    refused=_refused(response),
                    done=True,
                    logprobs=response.choices[0].logprobs if response.choices else None,
                )
            )
        for i, call in enumerate(message.tool_calls):
            items.append(_call_item(f"fc_{self.item_prefix}_{i}", call, done=True))
        if items and _cut(response):
            items[-1]["status"] = "incomplete"
        return items


def _refused(response: ChatResponse) -> bool:
    return bool(response.choices) and response.choices[0].refusal


def _cut(response: ChatResponse) -> bool:
    """Whether the answer was cut short (a length limit, a filter): its last item is then
    incomplete, as the response is."""
    return response.finish_reason in _INCOMPLETE and not _refused(response)


def render_response(
    response: ChatResponse, *, request_id: str, target: str, echo: dict[str, Any]
) -> bytes:
    """A ChatResponse as a Responses `response` object (its first choice)."""
    shape = ResponseShape(request_id=request_id, target=target, created=response.created, echo=echo)
    return orjson.dumps(shape.render(shape.output(response), response))


class EventRenderer:
    """Renders one stream's chunks as the Responses streaming events: the response created,
    then each output item in turn (added, its deltas, done: OpenAI ends one before it adds the
    next), then the response completed (or incomplete)."""

    def __init__(self, shape: ResponseShape) -> None:
        self._shape = shape
        self._sequence = 0
        self._started = False
        self._items: list[dict[str, Any]] = []
        """Every output item so far, as the final response object lists them."""
        self._open: int | None = None
        """The output index of the item still streaming, if any."""
        self._text: list[str] = []
        """The open message item's text so far."""
        self._refusing = False
        """Whether the open message item is a refusal (its text streams as one)."""
        self._logprobs: list[TokenLogprob] = []
        """The open message item's token logprobs so far (when asked for)."""
        self._calls: dict[int, int] = {}
        """Each tool call's stream index → its output index."""

    def _event(self, kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._sequence, **data}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _start(self) -> bytes:
        self._started = True
        response = self._shape.render([], None)
        return self._event("response.created", response=response) + self._event(
            "response.in_progress", response=response
        )

    def chunk(self, chunk: Chunk) -> bytes:
        """The events for one chunk (only the first choice exists in this API)."""
        out = b"" if self._started else self._start()
        if chunk.response is not None:
            return out + self._finish(chunk.response)
        if chunk.index != 0:
            return out
        if chunk.text:
            out += self._add_text(chunk.text, refusal=chunk.refusal, logprobs=chunk.logprobs)
        for delta in chunk.tool_calls:
            if delta.index not in self._calls:
                out += self._open_call(
                    delta.index, ToolCall(id=delta.id or "", name=delta.name or "", arguments="")
                )
            index = self._calls[delta.index]
            if index != self._open:
                raise BadResponseError(
                    f"the model's stream went back to tool call {delta.index} after it began "
                    "the next output, which the Responses API cannot stream"
                )
            if delta.arguments:
                self._items[index]["arguments"] += delta.arguments
                out += self._event(
                    "response.function_call_arguments.delta",
                    item_id=self._items[index]["id"],
                    output_index=index,
                    delta=delta.arguments,
                )
        return out

    def _add(self, item: dict[str, Any]) -> bytes:
        """Close the open item, then open `item` after it."""
        out = self._close()
        self._open = len(self._items)
        self._items.append(item)
        return out + self._event("response.output_item.added", output_index=self._open, item=item)

    def _open_call(self, stream_index: int, call: ToolCall) -> bytes:
        item_id = f"fc_{self._shape.item_prefix}_{len(self._calls)}"
        out = self._add(_call_item(item_id, call, done=False))
        self._calls[stream_index] = len(self._items) - 1
        return out

    def _add_text(
        self, text: str, *, refusal: bool, logprobs: tuple[TokenLogprob, ...] = ()
    ) -> bytes:
        out = b""
        if (
            self._open is None
            or self._items[self._open]["type"] != "message"
            or self._refusing != refusal
        ):
            out += self._open_message(refusal=refusal)
        self._text.append(text)
        self._logprobs.extend(logprobs)
        common = {"item_id": self._items[-1]["id"], "output_index": self._open, "content_index": 0}
        if refusal:
            return out + self._event("response.refusal.delta", **common, delta=text)
        tokens = logprob_items(logprobs)
        return out + self._event(
            "response.output_text.delta", **common, delta=text, logprobs=tokens
        )

    def _open_message(self, *, refusal: bool = False) -> bytes:
        index = len(self._items)
        suffix = "" if index == 0 else f"_{index}"
        item = _message_item(
            f"msg_{self._shape.item_prefix}{suffix}", "", refused=False, done=False
        )
        out = self._add(item)
        self._text, self._refusing, self._logprobs = [], refusal, []
        part = (
            {"type": "refusal", "refusal": ""}
            if refusal
            else {"type": "output_text", "text": "", "annotations": []}
        )
        return out + self._event(
            "response.content_part.added",
            item_id=item["id"],
            output_index=index,
            content_index=0,
            part=part,
        )

    def _close(self, *, cut: bool = False) -> bytes:
        """The events that end the open item (nothing when none is open); `cut`: the answer
        ended there, cut short, so the item is incomplete."""
        index, self._open = self._open, None
        if index is None:
            return b""
        item = self._items[index]
        status = "incomplete" if cut else "completed"
        if item["type"] == "function_call":
            item["status"] = status
            done = self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=item["arguments"],
            )
            return done + self._event("response.output_item.done", output_index=index, item=item)
        text = "".join(self._text)
        tokens = tuple(self._logprobs) if self._shape.logprobs else None
        item = _message_item(item["id"], text, refused=self._refusing, done=True, logprobs=tokens)
        item["status"] = status
        self._items[index] = item
        part = item["content"][0]
        common = {"item_id": item["id"], "output_index": index, "content_index": 0}
        done = (
            self._event("response.refusal.done", **common, refusal=text)
            if self._refusing
            else self._event(
                "response.output_text.done",
                **common,
                text=text,
                logprobs=logprob_items(tokens or ()),
            )
        )
        return (
            done
            + self._event("response.content_part.done", **common, part=part)
            + self._event("response.output_item.done", output_index=index, item=item)
        )

    def _finish(self, response: ChatResponse) -> bytes:
        # an empty answer is still one (empty) message
        out = b"" if self._items else self._open_message()
        out += self._close(cut=_cut(response))
        final = self._shape.render(self._items, response)
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        return out + self._event(kind, response=final)

    def error(self, error: ApiError) -> bytes:
        """The in-band error event that ends a broken stream."""
        return self._event("error", code=error.code, message=error.message, param=error.param)
