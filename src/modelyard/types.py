"""The values that flow through every Model: requests, responses, stream chunks, usage, decisions.

All are frozen, keyword-only dataclasses with slots: cheap to build on the hot path, safe to share
between the concurrent members of an ensemble, and impossible to mutate behind a caller's back.
Wire formats (OpenAI, Anthropic, Gemini, the gateway) translate to and from these in
`providers/*_wire.py` and `gateway/`; nothing else knows any vendor's JSON.

Three groups that stand alone live beside this module and are re-exported from it, so every
value is imported from `modelyard.types`: a conversation's messages (`types_message.py`:
`Message`, `Role`, its parts `TextPart`, `ImagePart` and `Part`, `ToolCall`, and the prompt-cache
`CacheTtl`), a model's reasoning (`types_reasoning.py`: `Thinking`, `Effort`, `ThinkingPart`,
`RedactedThinkingPart`, `Reasoning`, `ReasoningDelta`) and the audit record (`types_decision.py`:
`Decision`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal, Self

from modelyard.types_decision import Decision as Decision
from modelyard.types_message import CacheTtl as CacheTtl
from modelyard.types_message import ImagePart as ImagePart
from modelyard.types_message import Message as Message
from modelyard.types_message import Part as Part
from modelyard.types_message import Role as Role
from modelyard.types_message import TextPart as TextPart
from modelyard.types_message import ToolCall as ToolCall
from modelyard.types_reasoning import Effort as Effort
from modelyard.types_reasoning import Reasoning as Reasoning
from modelyard.types_reasoning import ReasoningDelta as ReasoningDelta
from modelyard.types_reasoning import RedactedThinkingPart as RedactedThinkingPart
from modelyard.types_reasoning import Thinking as Thinking
from modelyard.types_reasoning import ThinkingPart as ThinkingPart

ResponseCacheUse = Literal["use", "refresh", "bypass"]
"""What a request lets modelyard's response cache do: `use` a cached answer or store a new one,
`refresh` (answered afresh and stored: HTTP's `no-cache`), or `bypass` it (neither: `no-store`)."""


class FinishReason(StrEnum):
    """Why a choice stopped: the providers' reasons mapped onto one set."""

    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"


@dataclass(frozen=True, slots=True, kw_only=True)
class Tool:
    """A function the model may call; `parameters` is a JSON Schema object."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    strict: bool | None = None
    cache: CacheTtl | None = None
    """A prompt-cache breakpoint after this tool's definition (see `TextPart.cache`)."""


ToolChoice = Literal["auto", "none", "required"] | str
"""`auto`, `none`, `required`, or the name of one tool the model must call."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseFormat:
    """Plain text, any JSON object, or JSON matching `schema`."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    schema: Mapping[str, Any] | None = None
    name: str | None = None
    strict: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextManagement:
    """Anthropic's server-side context editing (`context_management`), kept as its JSON text.

    The edits (`clear_tool_uses_20250919`, `clear_thinking_20251015`, `compact_20260112`, ...)
    are versioned by date and only Anthropic can act on them, so they travel opaque: `json` is
    the object the caller sent, serialized with sorted keys (one text for one config, so it
    keys the response cache), sent to an Anthropic model unchanged and dropped for the others.
    """

    json: str


class Deadlined:
    """A request with a `deadline`: an absolute `time.monotonic()` instant, or None."""

    __slots__ = ()
    deadline: float | None

    def remaining(self) -> float | None:
        """Seconds left before the deadline (may be negative), or None without one."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def with_budget(self, seconds: float | None) -> Self:
        """This request with its deadline tightened to at most `seconds` from now."""
        if seconds is None:
            return self
        deadline = time.monotonic() + seconds
        if self.deadline is not None and self.deadline <= deadline:
            return self
        # Every subclass is a dataclass, which mypy cannot see from here.
        return replace(self, deadline=deadline)  # type: ignore[type-var]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatRequest(Deadlined):
    """A chat completion request, independent of any provider's wire format.

    `deadline` is an absolute `time.monotonic()` instant: every node sees what is left with
    `remaining()`. `key_id` and `tags` scope budgets, caches and rate limits to a caller.
    """

    messages: tuple[Message, ...]
    system: str | None = None
    system_cache: CacheTtl | None = None
    """A prompt-cache breakpoint after `system` (see `TextPart.cache`)."""
    thinking: Thinking | None = None
    """Reasoning asked for before the answer; None leaves it to the model's default."""
    effort: Effort | None = None
    """How much effort to put into the answer; None leaves it to the model's default. Models
    whose `capabilities.reasoning` is off never get it (their decision says so)."""
    context_management: ContextManagement | None = None
    """Anthropic's context editing; other providers never get it (their decision says so)."""
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    logprobs: bool = False
    top_logprobs: int | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    key_id: str | None = None
    deadline: float | None = None
    request_id: str | None = None
    """The caller's id for this request (the gateway's `x-request-id`), kept in the ledger."""
    response_cache: ResponseCacheUse = "use"
    """What the response cache may do with this request (the gateway's `Cache-Control`)."""
    fails_over_on_429: bool = False
    """Whether the caller sends this request to another equivalent member at once after a 429
    (a balance with a member left to try): a retry layer then hands a 429 back rather than
    retrying the same deployment."""

    def share_of_remaining(self, share: float) -> float | None:
        """Seconds `share` of the time left comes to: what one of several members may use while
        the others wait their turn (None without a deadline, or when the share is all of it)."""
        left = self.remaining()
        if left is None or share >= 1.0:
            return None
        return max(left, 0.0) * share

    @property
    def last_user_text(self) -> str:
        """The text of the last user message: what routers and caches look at first."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text
        return ""

    @property
    def prompt_text(self) -> str:
        """System prompt and every message's text, for token estimates and classifiers."""
        parts = [self.system] if self.system else []
        parts.extend(m.text for m in self.messages)
        return "\n".join(parts)


def split_system(messages: Sequence[Message]) -> tuple[str | None, tuple[Message, ...]]:
    """A chat's leading system messages joined into one system prompt (None without any), and
    the rest, a system message after the first turn where it stands: how a request keeps them,
    whatever API they came in. Lifted to the front, a late one ("from now on...") would say
    something else, and change the prompt's prefix, which providers' prompt caches key on;
    each wire format sends it where it stands, or into the system prompt for a model that takes
    none mid-chat (`capabilities.system_messages`)."""
    first = next((i for i, m in enumerate(messages) if m.role != "system"), len(messages))
    system = [m.text for m in messages[:first]]
    return ("\n\n".join(system) if system else None), tuple(messages[first:])


def user(text: str, **fields: Any) -> ChatRequest:
    """A one-message request: the shortest way to ask something."""
    return ChatRequest(messages=(Message(role="user", content=text),), **fields)


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Tokens a call consumed, as the provider reported them (or as estimated when it did not)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    """Input tokens read from the provider's prompt cache (part of `input_tokens`)."""
    cache_write_tokens: int = 0
    """Input tokens written to the provider's prompt cache (part of `input_tokens`; Anthropic
    bills them above the input price)."""
    cache_write_1h_tokens: int = 0
    """The part of `cache_write_tokens` written to Anthropic's 1-hour cache (2x input, where the
    5-minute cache is 1.25x)."""
    reasoning_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            cache_write_1h_tokens=self.cache_write_1h_tokens + other.cache_write_1h_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            estimated=self.estimated or other.estimated,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenLogprob:
    """One generated token with its log-probability and, if asked, the top alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Choice:
    """One of the `n` answers in a response."""

    index: int = 0
    message: Message
    finish_reason: FinishReason = FinishReason.STOP
    logprobs: tuple[TokenLogprob, ...] | None = None
    refusal: bool = False
    """The message's text is the model declining to answer (OpenAI's `refusal`), not an
    answer; it finishes with `content_filter`."""
    stop_sequence: str | None = None
    """The stop sequence that ended it (finish `stop`), when the provider says which
    (Anthropic does; OpenAI's and Gemini's `stop` does not tell one from the natural end)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatResponse:
    """A finished answer.

    `model` is the configured name of the model that answered (`provider:model`), and
    `provider_model` the id the provider reported, so drift from the pinned id is visible.
    `usage` is the answering call's; `cost` is everything this request spent in USD, failed and
    rejected attempts included, so a cascade's cost is the sum of the stages it ran.
    `confidence` is the answering model's own confidence in [0, 1] when it has one (a retriever's
    similarity, a classifier's probability, a replayed score).
    """

    id: str
    model: str
    provider_model: str
    choices: tuple[Choice, ...]
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0
    created: int = 0
    decision: Decision | None = None
    confidence: float | None = None
    system_fingerprint: str | None = None

    @property
    def message(self) -> Message:
        """The first choice's message."""
        return self.choices[0].message

    @property
    def text(self) -> str:
        """The first choice's text."""
        return self.choices[0].message.text

    @property
    def finish_reason(self) -> FinishReason:
        """The first choice's finish reason."""
        return self.choices[0].finish_reason


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallDelta:
    """A piece of a tool call as it streams; `index` ties the pieces of one call together."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Chunk:
    """A piece of a streamed answer.

    A stream yields text and tool-call deltas, then exactly one last chunk with `response` set:
    the assembled answer with its usage, cost and decision. A stream that breaks raises a
    `ModelError` instead of ending normally, so a cut answer is never taken for a whole one.
    """

    index: int = 0
    text: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    finish_reason: FinishReason | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    response: ChatResponse | None = None
    model: str | None = None
    """On the first chunk a model streams: its name, as `response.model` will give it (what
    the gateway's `x-modelyard-model` header names before the answer is whole); None after."""
    refusal: bool = False
    """`text` is the model declining to answer (see `Choice.refusal`)."""
    reasoning: ReasoningDelta | None = None
    """A piece of the model's reasoning, which comes before the answer (one field, not one a
    part: every field costs each chunk of every stream to build)."""
    usage: Usage | None = None
    """On the first chunk a model streams: the usage its provider had reported by then, when
    it tells the prompt's tokens before the answer (Anthropic's `message_start`, Gemini's
    first event); None when they come only at the end (OpenAI's `include_usage`)."""

    @property
    def chars(self) -> int:
        """Characters this piece adds to the answer, its text, reasoning and tool calls' names
        and arguments alike: what the estimate of a stream cut short counts as generated."""
        chars = len(self.text)
        if self.reasoning is not None:
            chars += len(self.reasoning.text)
        if self.tool_calls:
            chars += sum(len(t.name or "") + len(t.arguments) for t in self.tool_calls)
        return chars


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbeddingRequest(Deadlined):
    """Texts to embed (`deadline` as in ChatRequest)."""

    inputs: tuple[str, ...]
    dimensions: int | None = None
    key_id: str | None = None
    tags: tuple[str, ...] = ()
    deadline: float | None = None
    request_id: str | None = None
    """The gateway's request id (`x-request-id`): what its ledger row and log record share."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbeddingResponse:
    """One vector per input, in order."""

    model: str
    provider_model: str
    vectors: tuple[tuple[float, ...], ...]
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0
