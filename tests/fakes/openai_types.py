"""Strict checks of OpenAI payloads against the official `openai` SDK's own types.

The SDK's request TypedDicts and response models are turned into JSON Schemas (through
pydantic) with every object closed (`additionalProperties: false`), so a field the SDK does not
know is an error too, not only a wrong type. Both our wire format and the fake server are
checked with these, so neither can drift from the real API unnoticed.
"""

from __future__ import annotations

import functools
from typing import Any

import jsonschema
from openai.types import CreateEmbeddingResponse, EmbeddingCreateParams, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.chat.completion_create_params import (
    CompletionCreateParamsNonStreaming,
    CompletionCreateParamsStreaming,
)
from openai.types.shared import ErrorObject
from pydantic import BaseModel, TypeAdapter


def _closed(schema: Any) -> Any:
    """`schema` with every object that lists its properties closed to others."""
    if isinstance(schema, dict):
        out = {key: _closed(value) for key, value in schema.items()}
        if "properties" in out and out.get("type") == "object":
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    source: Any = _SOURCES[name]
    if isinstance(source, type) and issubclass(source, BaseModel):
        schema = source.model_json_schema()
    else:
        schema = TypeAdapter(source).json_schema()
    return jsonschema.Draft202012Validator(_closed(schema))


_SOURCES: dict[str, Any] = {
    "request": CompletionCreateParamsNonStreaming,
    "stream_request": CompletionCreateParamsStreaming,
    "completion": ChatCompletion,
    "chunk": ChatCompletionChunk,
    "embedding_request": EmbeddingCreateParams,
    "embeddings": CreateEmbeddingResponse,
    "model": Model,
    "error": ErrorObject,
}


def problems(kind: str, payload: Any) -> list[str]:
    """Every way `payload` departs from the SDK type `kind` (empty when it conforms)."""
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in _validator(kind).iter_errors(payload)
    ]


def check(kind: str, payload: Any) -> None:
    """Raise AssertionError listing the problems if `payload` is not a valid `kind`."""
    found = problems(kind, payload)
    assert not found, f"not a valid OpenAI {kind}: " + "; ".join(found)


def check_request(body: Any) -> None:
    """A chat request body, streaming or not."""
    stream = isinstance(body, dict) and body.get("stream") is True
    check("stream_request" if stream else "request", body)
