"""The fake Anthropic API's answers: what it says to a Messages request, as a message body or
as the stream of events that carries it.

By default the text is `You said: <last user text>`; a tool is called when `tool_choice`
demands one (`tool` → that tool, `any` → the first tool the last user text names, else the
first tool), or when `auto` is set and the last user text names a tool; with
`output_config.format` the text is JSON fitting its schema (`sample`), as structured outputs
answer. Tests script answers with `Turn`s instead. The text is cut at a stop sequence or at
`max_tokens` words; usage counts the prompt as `input_tokens` does, split by what the prompt
cache read and wrote.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.fakes import anthropic_thinking
from tests.fakes.anthropic_cache import CacheUse, marked_tokens
from tests.fakes.server import sse


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


@dataclass
class Plan:
    """One answer, decided: its blocks, stop reason and usage, for a body or a stream."""

    id: str
    turn: Turn | None
    blocks: list[dict[str, Any]]
    stop_reason: str
    stop_sequence: str | None
    usage: dict[str, Any]
    output_tokens: int


def plan(body: dict[str, Any], turn: Turn | None, *, cache: CacheUse, ids: Iterator[int]) -> Plan:
    """The answer to this request: the scripted `turn`'s, or the default one; `cache` is what the
    prompt cache read and wrote, `ids` numbers the message and its tool calls."""
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
        uses = _demanded_tools(body, last_user)
    text = turn.text if turn is not None and turn.text is not None else None
    if text is None and not uses:
        text = _json_answer(body) or ("and that is all." if prefill else f"You said: {last_user}")
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
                    "id": f"toolu_fake{next(ids):06d}",
                    "name": use.name,
                    "input": use.input,
                }
            )
            output_tokens += len(orjson.dumps(use.input)) // 4 + 1
    if turn is not None and turn.stop_reason is not None:
        stop_reason = turn.stop_reason
    return Plan(
        id=f"msg_fake{next(ids):06d}",
        turn=turn,
        blocks=blocks,
        stop_reason=stop_reason,
        stop_sequence=stop_sequence,
        usage=_usage(input_tokens(body), cache),
        output_tokens=max(1, output_tokens),
    )


def message(plan: Plan, model: str) -> dict[str, Any]:
    """The answer as the API's message body."""
    return {
        "id": plan.id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": plan.blocks,
        "stop_reason": plan.stop_reason,
        "stop_sequence": plan.stop_sequence,
        "usage": {**plan.usage, "output_tokens": plan.output_tokens},
    }


def stream(plan: Plan, model: str) -> list[bytes]:
    """The answer as the API's stream events, message_start to message_stop."""
    start = {
        "id": plan.id,
        "type": "message",
        "role": "assistant",
        "model": model,
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
    return out


def _usage(prompt: int, use: CacheUse) -> dict[str, Any]:
    cached = min(use.read, prompt)
    created = min(use.written, prompt - cached)
    created_1h = min(use.written_1h, created)
    return {
        "input_tokens": prompt - cached - created,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": created,
        "cache_creation": {
            "ephemeral_5m_input_tokens": created - created_1h,
            "ephemeral_1h_input_tokens": created_1h,
        },
    }


def _demanded_tools(body: dict[str, Any], last_user: str) -> list[ToolUse]:
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
