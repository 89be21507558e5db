"""The wire formats modelyard speaks, and what each assumes when the config does not say.

The only place that knows a provider's defaults (URL, auth header, capabilities); everything
else reads them from here as data.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modelyard.model import Capabilities
from modelyard.providers.wire import EmbeddingWireFormat, WireFormat

if TYPE_CHECKING:
    from modelyard.providers.openai_wire import MaxTokensField


@dataclass(frozen=True, slots=True, kw_only=True)
class WireDefaults:
    """What a provider of one wire format is unless configured otherwise."""

    module: str
    base_url: str
    auth_header: str | None
    auth_prefix: str
    auth_query: str | None = None
    capabilities: Capabilities
    embeddings: bool = False


WIRES: dict[str, WireDefaults] = {
    "openai": WireDefaults(
        module="modelyard.providers.openai_wire",
        base_url="https://api.openai.com/v1",
        auth_header="Authorization",
        auth_prefix="Bearer ",
        capabilities=Capabilities(
            # Reasoning is off: most models behind this wire (gpt-4o, vLLM, Ollama) refuse
            # `reasoning_effort`; a reasoning model sets `capabilities.reasoning: true`.
            streaming=True,
            tools=True,
            vision=True,
            json_schema=True,
            logprobs=True,
            prefill=False,
            reasoning=False,
        ),
        embeddings=True,
    ),
    "anthropic": WireDefaults(
        module="modelyard.providers.anthropic_wire",
        base_url="https://api.anthropic.com",
        auth_header="x-api-key",
        auth_prefix="",
        capabilities=Capabilities(
            # JSON schema answers arrive through a forced tool call (see anthropic_tools.py).
            # Extended thinking: a model without it answers the API's own 400. Mid-conversation
            # system messages: only Claude Opus 4.8 on takes them (`system_messages: true`).
            streaming=True,
            tools=True,
            vision=True,
            json_schema=True,
            logprobs=False,
            prefill=True,
            reasoning=True,
            system_messages=False,
            choices=False,
        ),
    ),
    "gemini": WireDefaults(
        module="modelyard.providers.gemini_wire",
        base_url="https://generativelanguage.googleapis.com/v1beta",
        auth_header="x-goog-api-key",
        auth_prefix="",
        capabilities=Capabilities(
            # Every current Gemini model thinks (2.5 on); 2.0 refuses a thinkingConfig.
            streaming=True,
            tools=True,
            vision=True,
            json_schema=True,
            logprobs=False,
            prefill=False,
            reasoning=True,
        ),
        embeddings=True,
    ),
}


def wire_format(kind: str, *, max_tokens_field: MaxTokensField | None = None) -> WireFormat:
    """The wire format object (`WIRE` in its module) for a provider type; `max_tokens_field`
    renames the output cap of the OpenAI format (see `ProviderSpec.max_tokens_field`)."""
    if max_tokens_field is not None:
        from modelyard.providers.openai_wire import OpenAIWire

        return OpenAIWire(max_tokens_field=max_tokens_field)
    module = importlib.import_module(WIRES[kind].module)
    wire: WireFormat = module.WIRE
    return wire


def embedding_wire_format(kind: str) -> EmbeddingWireFormat | None:
    """The embedding wire format for a provider type, if it has one."""
    if not WIRES[kind].embeddings:
        return None
    module = importlib.import_module(WIRES[kind].module)
    wire: EmbeddingWireFormat = module.WIRE
    return wire
