"""Assembling streamed chunks into a response."""

from __future__ import annotations

import pytest

from modelyard.errors import BadResponseError
from modelyard.model import ModelInfo
from modelyard.providers.fake import Reply, ScriptedModel
from modelyard.providers.local_basic import FunctionModel
from modelyard.streaming import StreamAssembler, collect, response_chunks
from modelyard.types import (
    Chunk,
    FinishReason,
    ReasoningDelta,
    RedactedThinkingPart,
    ThinkingPart,
    ToolCallDelta,
    user,
)

THOUGHTS = (
    ThinkingPart(text="first, the sum", signature="sig-1"),
    RedactedThinkingPart(data="opaque"),
    ThinkingPart(text="then the check", signature="sig-2"),
)


def test_tool_call_pieces_join_by_index() -> None:
    assembler = StreamAssembler()
    assembler.add(
        Chunk(tool_calls=(ToolCallDelta(index=0, id="c1", name="get_", arguments='{"a"'),))
    )
    assembler.add(Chunk(tool_calls=(ToolCallDelta(index=0, name="weather", arguments=": 1}"),)))
    assembler.add(Chunk(tool_calls=(ToolCallDelta(index=1, id="c2", name="t", arguments="{}"),)))
    assembler.add(Chunk(finish_reason=FinishReason.TOOL_CALLS))
    (choice,) = assembler.choices()
    calls = choice.message.tool_calls
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("c1", "get_weather", '{"a": 1}'),
        ("c2", "t", "{}"),
    ]


def test_choices_without_finish_reason_are_a_broken_stream() -> None:
    assembler = StreamAssembler()
    assembler.add(Chunk(text="partial"))
    with pytest.raises(BadResponseError):
        assembler.choices()


def test_several_choices_kept_apart() -> None:
    assembler = StreamAssembler()
    for index, text in ((0, "a"), (1, "b"), (0, "c")):
        assembler.add(Chunk(index=index, text=text))
    for index in (0, 1):
        assembler.add(Chunk(index=index, finish_reason=FinishReason.STOP))
    assert [c.message.text for c in assembler.choices()] == ["ac", "b"]


async def test_every_stream_names_its_model_on_its_first_chunk_only() -> None:
    # A streaming fake, a model that only completes (replayed as a stream), and a finished
    # answer replayed (a vote's, a cache hit's).
    fake = ScriptedModel(info=ModelInfo(name="fake", kind="fake"), default=Reply(text="a b c"))
    plain = FunctionModel(ModelInfo(name="plain", kind="function"), lambda request: "a b c")
    answer = await fake.complete(user("x"))
    for name, chunks in [
        ("fake", [c async for c in fake.stream(user("x"))]),
        ("plain", [c async for c in plain.stream(user("x"))]),
        ("fake", response_chunks(answer)),
    ]:
        assert [c.model for c in chunks] == [name] + [None] * (len(chunks) - 1)
        assert (await collect(_replay(chunks))).model == name


def test_reasoning_pieces_join_into_blocks_each_signature_closes() -> None:
    assembler = StreamAssembler()
    for chunk in (
        Chunk(reasoning=ReasoningDelta(text="first, ")),
        Chunk(reasoning=ReasoningDelta(text="the sum")),
        Chunk(reasoning=ReasoningDelta(signature="sig-1")),
        Chunk(reasoning=ReasoningDelta(redacted="opaque")),
        Chunk(reasoning=ReasoningDelta(text="then the check")),
        Chunk(reasoning=ReasoningDelta(signature="sig-2")),
        Chunk(text="4"),
        Chunk(finish_reason=FinishReason.STOP),
    ):
        assembler.add(chunk)
    (choice,) = assembler.choices()
    assert choice.message.thinking == THOUGHTS
    assert choice.message.text == "4"  # the reasoning is not the answer


def test_a_reasoning_block_whose_signature_never_came_is_kept_unsigned() -> None:
    assembler = StreamAssembler()
    assembler.add(Chunk(reasoning=ReasoningDelta(text="half a thought")))
    assembler.add(Chunk(finish_reason=FinishReason.LENGTH))
    assert assembler.choices()[0].message.thinking == (ThinkingPart(text="half a thought"),)
    assembler.add(Chunk(reasoning=ReasoningDelta(text=", finished")))  # reading closed nothing
    assert assembler.choices()[0].message.thinking == (
        ThinkingPart(text="half a thought, finished"),
    )


async def test_a_finished_answers_reasoning_replays_first_and_assembles_back() -> None:
    fake = ScriptedModel(
        info=ModelInfo(name="fake", kind="fake"), default=Reply(text="4", thinking=THOUGHTS)
    )
    answer = await fake.complete(user("2+2?"))
    assert answer.message.thinking == THOUGHTS
    for chunks in (response_chunks(answer), [c async for c in fake.stream(user("2+2?"))]):
        pieces = [c.reasoning for c in chunks[:3]]
        assert [p.redacted or p.signature for p in pieces if p is not None] == [
            "sig-1",
            "opaque",
            "sig-2",
        ]
        assert [c.model for c in chunks] == ["fake"] + [None] * (len(chunks) - 1)
        assert (await collect(_replay(chunks))).message.thinking == THOUGHTS
        assembler = StreamAssembler()
        for chunk in chunks[:-1]:
            assembler.add(chunk)
        assert assembler.choices()[0].message.thinking == THOUGHTS


async def _replay(chunks: list[Chunk]):  # type: ignore[no-untyped-def]
    for chunk in chunks:
        yield chunk
