"""The content blocks of one Messages turn (`anthropic_wire.to_wire` assembles the turns): a
message's reasoning first, then its text and images, its tool calls, or the tool result it
carries, each with the prompt-cache marker its part asks for.
"""

from __future__ import annotations

import binascii
from typing import Any

import orjson

from modelyard.errors import BadRequestError
from modelyard.types import (
    CacheTtl,
    ImagePart,
    Message,
    Part,
    RedactedThinkingPart,
    TextPart,
    ToolCall,
)

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

Block = dict[str, Any]
"""One content block, as JSON."""


def marked(block: Block, ttl: CacheTtl | None) -> Block:
    """`block` with the `cache_control` breakpoint `ttl` asks for (5 minutes is the default)."""
    if ttl is not None:
        block["cache_control"] = (
            {"type": "ephemeral", "ttl": "1h"} if ttl == "1h" else {"type": "ephemeral"}
        )
    return block


def message_blocks(message: Message, position: int) -> list[Block]:
    """The blocks of `messages[position]`: an assistant's reasoning first, unchanged (the API
    refuses it moved or altered), then its content and tool calls; a tool result as one block."""
    if message.role == "tool":
        return [_tool_result(message, position)]
    blocks = _content_blocks(message.content, f"messages[{position}]")
    if message.role == "assistant":
        blocks.extend(_tool_use(call, position) for call in message.tool_calls)
        if message.thinking:
            blocks[:0] = [
                {"type": "redacted_thinking", "data": part.data}
                if isinstance(part, RedactedThinkingPart)
                else {"type": "thinking", "thinking": part.text, "signature": part.signature}
                for part in message.thinking
            ]
    return blocks


def _content_blocks(content: str | tuple[Part, ...], where: str) -> list[Block]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[Block] = []
    for index, part in enumerate(content):
        if isinstance(part, TextPart):
            if part.text:  # the API rejects empty text blocks
                blocks.append(marked({"type": "text", "text": part.text}, part.cache))
        else:
            blocks.append(marked(_image(part, f"{where}.content[{index}]"), part.cache))
    return blocks


def _image(part: ImagePart, where: str) -> Block:
    url = part.url
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not comma or encoding != "base64":
            raise BadRequestError(
                f"{where}: an image data: URI must be base64 (data:image/png;base64,...)",
                code="invalid_image",
                param=where,
            )
        if media_type not in IMAGE_TYPES:
            raise BadRequestError(
                f"{where}: image type {media_type!r} is not one Anthropic accepts "
                f"({', '.join(sorted(IMAGE_TYPES))})",
                code="invalid_image",
                param=where,
            )
        try:
            binascii.a2b_base64(data, strict_mode=True)
        except binascii.Error:
            raise BadRequestError(
                f"{where}: the image data: URI is not valid base64",
                code="invalid_image",
                param=where,
            ) from None
        source = {"type": "base64", "media_type": media_type, "data": data}
        return {"type": "image", "source": source}
    raise BadRequestError(
        f"{where}: an image needs an http(s) URL or a data: URI, got {url[:40]!r}",
        code="invalid_image",
        param=where,
    )


def _tool_use(call: ToolCall, position: int) -> Block:
    where = f"messages[{position}] tool call {call.id!r} ({call.name})"
    try:
        arguments = orjson.loads(call.arguments) if call.arguments.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(
            f"{where}: arguments are not valid JSON ({exc}): {call.arguments[:80]!r}",
            code="invalid_tool_arguments",
        ) from None
    if not isinstance(arguments, dict):
        raise BadRequestError(
            f"{where}: arguments must be a JSON object, got {type(arguments).__name__}",
            code="invalid_tool_arguments",
        )
    block = {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}
    return marked(block, call.cache)


def _tool_result(message: Message, position: int) -> Block:
    if not message.tool_call_id:
        raise BadRequestError(
            f"messages[{position}] (tool) has no tool_call_id; Anthropic ties every tool result "
            "to the tool_use it answers",
            code="missing_tool_call_id",
        )
    block: Block = {"type": "tool_result", "tool_use_id": message.tool_call_id}
    if message.tool_error:
        block["is_error"] = True
    content = _content_blocks(message.content, f"messages[{position}]")
    if plain_text(content):
        block["content"] = content[0]["text"]
    elif content:
        block["content"] = content
    return block


def plain_text(blocks: list[Block]) -> bool:
    """Whether `blocks` is one text block that a plain string says as well (no marker)."""
    return len(blocks) == 1 and blocks[0]["type"] == "text" and "cache_control" not in blocks[0]
