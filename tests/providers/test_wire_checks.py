"""The checks every wire format applies to a request before writing its body, whichever way
the request came (the gateway's APIs or the library's `Yard.complete`)."""

from __future__ import annotations

import pytest

from modelyard.errors import BadRequestError
from modelyard.providers import anthropic_wire, gemini_wire, openai_wire
from modelyard.providers.wire import WireFormat
from modelyard.types import ChatRequest, Message

WIRES = [anthropic_wire.WIRE, gemini_wire.WIRE, openai_wire.WIRE]


@pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.name)
def test_top_logprobs_without_logprobs_is_refused_naming_it(wire: WireFormat) -> None:
    # The gateway's Chat Completions refuses it as OpenAI does; a library caller's request
    # reaches the wire as it is, and Gemini sent it without the alternatives (Anthropic too),
    # so the answer came back without them, unsaid.
    request = ChatRequest(
        messages=(Message(role="user", content="hi"),), max_tokens=10, top_logprobs=2
    )
    with pytest.raises(BadRequestError) as caught:
        wire.to_wire(request, "m", stream=False)
    assert caught.value.param == "top_logprobs"
