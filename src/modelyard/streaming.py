"""Turning streams into responses and back: the one place chunks are assembled."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace

from modelyard.errors import BadResponseError
from modelyard.types import (
    ChatResponse,
    Choice,
    Chunk,
    FinishReason,
    Message,
    Reasoning,
    ReasoningDelta,
    RedactedThinkingPart,
    ThinkingPart,
    TokenLogprob,
    ToolCall,
)


@dataclass(slots=True)
class _ToolCallParts:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _ChoiceParts:
    text: list[str] = field(default_factory=list)
    tool_calls: dict[int, _ToolCallParts] = field(default_factory=dict)
    finish_reason: FinishReason | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    refusal: bool = False
    answered: bool = False
    """Whether any text came that was not a refusal (the choice is then an answer)."""
    thinking: list[Reasoning] = field(default_factory=list)
    """The reasoning blocks a signature (or a redacted block) has closed."""
    thought: list[str] | None = None
    """The reasoning block still open: its pieces so far (None when none is)."""

    def think(self, delta: ReasoningDelta) -> None:
        """Take a piece of reasoning: text joins the open block, a signature closes it."""
        if delta.text:
            if self.thought is None:
                self.thought = []
            self.thought.append(delta.text)
        if delta.signature:
            self.thinking.append(
                ThinkingPart(text="".join(self.thought or ()), signature=delta.signature)
            )
            self.thought = None
        if delta.redacted:
            self.thinking.extend(self.unsigned())
            self.thought = None
            self.thinking.append(RedactedThinkingPart(data=delta.redacted))

    def unsigned(self) -> tuple[Reasoning, ...]:
        """The open reasoning block as it stands, unsigned (its signature has not come)."""
        return () if self.thought is None else (ThinkingPart(text="".join(self.thought)),)


class StreamAssembler:
    """Accumulates delta chunks, per choice, into the choices of a full response."""

    __slots__ = ("_choices", "saw_content")

    def __init__(self) -> None:
        self._choices: dict[int, _ChoiceParts] = {}
        self.saw_content = False

    def add(self, chunk: Chunk) -> None:
        """Take one delta chunk into account."""
        parts = self._choices.get(chunk.index)
        if parts is None:
            parts = self._choices[chunk.index] = _ChoiceParts()
        if chunk.text:
            parts.text.append(chunk.text)
            if chunk.refusal:
                parts.refusal = True
            else:
                parts.answered = True
            self.saw_content = True
        for delta in chunk.tool_calls:
            call = parts.tool_calls.get(delta.index)
            if call is None:
                call = parts.tool_calls[delta.index] = _ToolCallParts()
            if delta.id:
                call.id = delta.id
            if delta.name:
                call.name += delta.name
            if delta.arguments:
                call.arguments.append(delta.arguments)
            self.saw_content = True
        if chunk.reasoning is not None:
            parts.think(chunk.reasoning)
            self.saw_content = True
        if chunk.logprobs:
            parts.logprobs.extend(chunk.logprobs)
        if chunk.finish_reason is not None:
            parts.finish_reason = chunk.finish_reason

    @property
    def text(self) -> str:
        """The first choice's text so far."""
        parts = self._choices.get(0)
        return "".join(parts.text) if parts else ""

    @property
    def finished(self) -> bool:
        """Whether every choice seen so far has its finish reason."""
        return bool(self._choices) and all(
            p.finish_reason is not None for p in self._choices.values()
        )

    def choices(self, *, logprobs: bool = False) -> tuple[Choice, ...]:
        """The assembled choices; a choice without a finish reason is a broken stream."""
        out = []
        for index in sorted(self._choices) or [0]:
            parts = self._choices.get(index, _ChoiceParts(finish_reason=FinishReason.STOP))
            if parts.finish_reason is None:
                raise BadResponseError(f"stream ended without a finish reason for choice {index}")
            calls = tuple(
                ToolCall(id=c.id, name=c.name, arguments="".join(c.arguments))
                for _, c in sorted(parts.tool_calls.items())
            )
            message = Message(
                role="assistant",
                content="".join(parts.text),
                tool_calls=calls,
                thinking=(*parts.thinking, *parts.unsigned()),
            )
            out.append(
                Choice(
                    index=index,
                    message=message,
                    finish_reason=parts.finish_reason,
                    logprobs=tuple(parts.logprobs) if logprobs else None,
                    refusal=parts.refusal and not parts.answered,
                )
            )
        return tuple(out)


async def collect(stream: AsyncIterator[Chunk]) -> ChatResponse:
    """Drain a stream and return the response its last chunk carries."""
    response = None
    async for chunk in stream:
        if chunk.response is not None:
            response = chunk.response
    if response is None:
        raise BadResponseError("stream ended without its final response")
    return response


def response_chunks(response: ChatResponse) -> list[Chunk]:
    """A finished response as the chunks a stream of it would have carried: each choice's
    reasoning blocks one by one, then its text and tool calls."""
    from modelyard.types import ToolCallDelta

    chunks = []
    for choice in response.choices:
        chunks.extend(reasoning_chunks(choice.message.thinking, choice.index))
        chunks.append(
            Chunk(
                index=choice.index,
                text=choice.message.text,
                tool_calls=tuple(
                    ToolCallDelta(index=i, id=c.id, name=c.name, arguments=c.arguments)
                    for i, c in enumerate(choice.message.tool_calls)
                ),
                finish_reason=choice.finish_reason,
                logprobs=choice.logprobs or (),
                refusal=choice.refusal,
            )
        )
    if chunks:
        chunks[0] = replace(chunks[0], model=response.model, usage=response.usage)
    chunks.append(Chunk(response=response))
    return chunks


def reasoning_chunks(thinking: Sequence[Reasoning], index: int = 0) -> list[Chunk]:
    """Reasoning blocks as the chunks that stream them: one a block, its signature on it."""
    return [
        Chunk(
            index=index,
            reasoning=ReasoningDelta(redacted=part.data)
            if isinstance(part, RedactedThinkingPart)
            else ReasoningDelta(text=part.text, signature=part.signature),
        )
        for part in thinking
    ]
