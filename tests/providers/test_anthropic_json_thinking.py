"""JSON mode with thinking on the Anthropic wire: the API refuses a forced tool while the model
thinks, so the request's JSON mode goes out as native structured output (`output_config.format`,
beside the effort) and the answer's text block is the JSON, checked to parse; without thinking
the forced tool stays. Pure `to_wire` first, then through RemoteModel against the claude_fake."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from tests.fakes.anthropic_server import FakeAnthropic, Turn, validate_request
from tests.providers.test_anthropic_wire import ask, body, u

import modelyard
from modelyard.errors import BadResponseError
from modelyard.providers.anthropic_answer import JSON_TOOL
from modelyard.providers.anthropic_wire import WIRE
from modelyard.streaming import collect
from modelyard.types import (
    Choice,
    FinishReason,
    Message,
    ResponseFormat,
    Thinking,
    ThinkingPart,
)

BUDGET = Thinking(budget_tokens=2048)
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
PLACE = ResponseFormat(type="json_schema", schema=SCHEMA, name="place")


# --- the request ------------------------------------------------------------------------------


def test_json_schema_with_thinking_is_output_config_format_not_a_forced_tool() -> None:
    sent = body(ask(u("where?"), max_tokens=8000, thinking=BUDGET, response_format=PLACE))
    assert sent["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    assert "tools" not in sent and "tool_choice" not in sent


def test_json_object_with_adaptive_thinking_asks_for_any_object_beside_the_effort() -> None:
    request = ask(
        u("anything"),
        thinking=Thinking(type="adaptive"),
        effort="minimal",
        response_format=ResponseFormat(type="json_object"),
    )
    assert body(request)["output_config"] == {
        "effort": "low",
        "format": {"type": "json_schema", "schema": {"type": "object"}},
    }


@pytest.mark.parametrize("thinking", [None, Thinking(type="disabled")])
def test_without_thinking_json_mode_stays_a_forced_tool(thinking: Thinking | None) -> None:
    sent = body(ask(u("where?"), thinking=thinking, effort="high", response_format=PLACE))
    assert sent["output_config"] == {"effort": "high"}
    assert sent["tool_choice"] == {"type": "tool", "name": JSON_TOOL}


def test_a_finished_native_answer_that_is_not_json_is_a_bad_response() -> None:
    request = ask(u("where?"), thinking=BUDGET, response_format=PLACE)
    said = Message(role="assistant", content="Oslo, I think")
    with pytest.raises(BadResponseError, match="not JSON: 'Oslo, I think'"):
        WIRE.check_answer(request, [Choice(index=0, message=said, finish_reason=FinishReason.STOP)])
    # A cut answer says so by its finish reason; a forced tool's answer is checked as it is read.
    WIRE.check_answer(request, [Choice(index=0, message=said, finish_reason=FinishReason.LENGTH)])
    WIRE.check_answer(
        ask(u("where?"), response_format=PLACE),
        [Choice(index=0, message=said, finish_reason=FinishReason.STOP)],
    )


# --- through RemoteModel, against the fake on a socket --------------------------------------------


@pytest.mark.parametrize("streamed", [False, True])
async def test_json_mode_with_thinking_answers_json_that_fits_the_schema(
    claude_yard: modelyard.Yard, claude_fake: FakeAnthropic, streamed: bool
) -> None:
    asked: dict[str, Any] = {"thinking": BUDGET, "response_format": PLACE}
    if streamed:
        response = await collect(claude_yard.stream("sonnet", "where?", **asked))
    else:
        response = await claude_yard.complete("sonnet", "where?", **asked)
    assert orjson.loads(response.text) == {"city": "text", "days": 1}
    assert response.finish_reason is FinishReason.STOP
    assert [type(p) for p in response.message.thinking] == [ThinkingPart]
    sent = claude_fake.requests[-1].json
    assert sent["output_config"]["format"]["schema"] == SCHEMA and "tools" not in sent


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_native_json_answer_that_does_not_parse_is_a_bad_response(
    claude_yard: modelyard.Yard, claude_fake: FakeAnthropic, streamed: bool
) -> None:
    claude_fake.script(Turn(text="Oslo, for a week."))
    asked: dict[str, Any] = {"thinking": BUDGET, "response_format": PLACE}
    with pytest.raises(BadResponseError, match="not JSON") as caught:
        if streamed:
            await collect(claude_yard.stream("sonnet", "where?", **asked))
        else:
            await claude_yard.complete("sonnet", "where?", **asked)
    assert caught.value.cost > 0  # generated, so billed


def test_the_fake_like_the_api_refuses_the_forced_tool_while_thinking() -> None:
    # What the adapter avoids: the forced JSON tool with thinking on is the API's 400.
    sent = body(ask(u("where?"), response_format=PLACE))
    thinking = {"type": "enabled", "budget_tokens": 2048}
    problem = validate_request({**sent, "max_tokens": 8000, "thinking": thinking})
    assert problem is not None and "tool_choice forces tool use" in problem
