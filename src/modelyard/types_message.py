"""The values of a conversation: its messages (`Message`, with its `Role`), the parts their
content is made of (`TextPart`, `ImagePart`, `Part`), the tool calls an assistant turn carries
(`ToolCall`) and how long a prompt-cache breakpoint lasts (`CacheTtl`).

Kept apart from `types.py`, which imports and re-exports them, because they stand alone: they
name nothing of a request or a response but a message's reasoning (`types_reasoning.py`).
Import them from `modelyard.types`, as everything else is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from modelyard.types_reasoning import Reasoning

Role = Literal["system", "user", "assistant", "tool"]

CacheTtl = Literal["5m", "1h"]
"""How long a prompt-cache breakpoint keeps its prefix (Anthropic's `cache_control` ttl)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TextPart:
    """A run of text inside a message."""

    text: str
    cache: CacheTtl | None = None
    """A prompt-cache breakpoint after this part: the prompt up to here is cached for this long
    by providers that take explicit markers (Anthropic); others ignore it. It changes what a
    call is billed, never its answer."""
    type: Literal["text"] = "text"


@dataclass(frozen=True, slots=True, kw_only=True)
class ImagePart:
    """An image, by URL or `data:` URI."""

    url: str
    detail: str | None = None
    cache: CacheTtl | None = None
    """A prompt-cache breakpoint after this image (see `TextPart.cache`)."""
    type: Literal["image"] = "image"


Part = TextPart | ImagePart


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    """A call the model asks the caller to make; `arguments` is the JSON text the model wrote."""

    id: str
    name: str
    arguments: str
    cache: CacheTtl | None = None
    """A prompt-cache breakpoint after this call, when it is sent back in a later turn (see
    `TextPart.cache`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One turn of a conversation; `content` is plain text or a sequence of parts."""

    role: Role
    content: str | tuple[Part, ...] = ""
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    thinking: tuple[Reasoning, ...] = ()
    """An assistant message's reasoning, in the order it came, before its content: kept apart
    from `content` since it is not the answer (`text` leaves it out) and Anthropic wants it
    back first in the turn, unchanged; wire formats that cannot carry it leave it out."""
    tool_error: bool = False
    """A tool message whose call failed: its content is the error (Anthropic's `is_error`,
    Gemini's `error` response; OpenAI's APIs have no such mark: the content starts `Error: `)."""

    @property
    def text(self) -> str:
        """The message's text, parts joined; images are left out."""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def has_image(self) -> bool:
        """Whether any part is an image."""
        return not isinstance(self.content, str) and any(
            isinstance(p, ImagePart) for p in self.content
        )
