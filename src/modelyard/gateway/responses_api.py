"""The OpenAI Responses API (`POST /v1/responses`) as the gateway serves it, statelessly: the
conversation comes whole in `input`, as clients send it with `store: false`, and nothing is kept
to be fetched or continued later (`previous_response_id` and `store: true` are refused, saying
so). Responses JSON in, ChatRequest out; `responses_render` writes the answers back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelyard.gateway.errors import bad_request
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
    end_user,
    function_tool,
    reasoning_effort,
    text_only,
    text_only_system,
)
from modelyard.types import (
    ChatRequest,
    Effort,
    ImagePart,
    Message,
    Part,
    ResponseFormat,
    TextPart,
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
        "safety_identifier",
        "store",
        "previous_response_id",
        "include",
        "top_logprobs",
        "service_tier",
        "reasoning",
    }
)
_NEUTRAL: dict[str, Any] = {
    "truncation": "disabled",
    "background": False,
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


def _reasoning(raw: Any) -> Effort | None:
    """`reasoning` as the request's effort: its `effort` only (a summary is not written here,
    so asking for one is a 400 naming it)."""
    if raw is None:
        return None
    reasoning = expect_object(raw, "reasoning")
    reject_unknown(reasoning, frozenset({"effort"}), {"summary": None}, "reasoning.")
    return reasoning_effort(reasoning.get("effort"), "reasoning.effort")


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
        metadata=end_user(body, metadata),
        effort=_reasoning(body.get("reasoning")),
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
        "safety_identifier": body.get("safety_identifier"),
        "top_logprobs": top_logprobs,
        "reasoning": {"effort": request.effort, "summary": None},
    }
    return ResponsesCall(
        target=target, request=request, stream=bool(optional_bool(body, "stream")), echo=echo
    )
