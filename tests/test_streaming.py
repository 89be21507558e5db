"""Assembling streamed chunks into a response."""

from __future__ import annotations

import pytest

from modelyard.errors import BadResponseError
from modelyard.streaming import StreamAssembler
from modelyard.types import Chunk, FinishReason, ToolCallDelta


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
