"""The OpenAI Chat Completions API as the gateway writes it: a ChatResponse as a
`chat.completion` object, chunks as `chat.completion.chunk` SSE frames, and the error JSON and
model list every OpenAI client reads."""

from __future__ import annotations

from typing import Any

import orjson

from modelyard.gateway.errors import ApiError
from modelyard.types import ChatResponse, Chunk, Reasoning, ThinkingPart, TokenLogprob


def logprob_items(items: tuple[TokenLogprob, ...]) -> list[dict[str, Any]]:
    """Tokens with their log-probabilities (and the top alternatives asked for), as both of
    OpenAI's APIs write them."""
    return [
        {
            "token": t.token,
            "logprob": t.logprob,
            "bytes": list(t.token.encode()),
            "top_logprobs": [
                {"token": tok, "logprob": lp, "bytes": list(tok.encode())} for tok, lp in t.top
            ],
        }
        for t in items
    ]


def _logprobs(items: tuple[TokenLogprob, ...] | None) -> dict[str, Any] | None:
    if items is None:
        return None
    return {"content": logprob_items(items), "refusal": None}


def _usage(response: ChatResponse) -> dict[str, Any]:
    usage = response.usage
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def render_response(response: ChatResponse, *, request_id: str, target: str) -> bytes:
    """A ChatResponse as an OpenAI `chat.completion` object."""
    choices = []
    for choice in response.choices:
        message = choice.message
        out: dict[str, Any] = {
            "role": "assistant",
            "content": message.text if (message.text or not message.tool_calls) else None,
            "refusal": None,
        }
        if choice.refusal:  # OpenAI's own shape: no content, the refusal, finish "stop"
            out["content"], out["refusal"] = None, message.text
        thought = readable(message.thinking)
        if thought:  # the de facto field of compatible servers: OpenAI's own has none
            out["reasoning_content"] = thought
        if message.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in message.tool_calls
            ]
        choices.append(
            {
                "index": choice.index,
                "message": out,
                "logprobs": _logprobs(choice.logprobs),
                "finish_reason": "stop" if choice.refusal else choice.finish_reason.value,
            }
        )
    return orjson.dumps(
        {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion",
            "created": response.created,
            "model": target,
            "choices": choices,
            "usage": _usage(response),
            "system_fingerprint": response.system_fingerprint,
        }
    )


class ChunkRenderer:
    """Renders one stream's chunks as OpenAI `chat.completion.chunk` SSE frames."""

    __slots__ = ("_created", "_head", "_id", "_include_usage", "_refused", "_started", "_target")

    def __init__(self, *, request_id: str, target: str, created: int, include_usage: bool) -> None:
        self._id = f"chatcmpl-{request_id}"
        self._target = target
        self._created = created
        self._include_usage = include_usage
        self._started: set[int] = set()
        self._refused: set[int] = set()

    def _frame(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        payload = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._target,
            "choices": choices,
            **extra,
        }
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    def chunk(self, chunk: Chunk) -> bytes:
        """The SSE frame(s) for one delta chunk, or the closing frames for the final one."""
        if chunk.response is not None:
            return self._final(chunk.response)
        thought = chunk.reasoning.text if chunk.reasoning is not None else ""
        if not thought and chunk.index in self._started and not _visible(chunk):
            return b""  # a signature or a redacted block: nothing a client could read
        delta: dict[str, Any] = {}
        if chunk.index not in self._started:
            self._started.add(chunk.index)
            delta["role"] = "assistant"
        if thought:
            delta["reasoning_content"] = thought
        if chunk.text:
            if chunk.refusal:
                self._refused.add(chunk.index)
            delta["refusal" if chunk.refusal else "content"] = chunk.text
        if chunk.tool_calls:
            delta["tool_calls"] = [
                {
                    "index": d.index,
                    **({"id": d.id, "type": "function"} if d.id else {}),
                    "function": {
                        **({"name": d.name} if d.name else {}),
                        "arguments": d.arguments,
                    },
                }
                for d in chunk.tool_calls
            ]
        finish = chunk.finish_reason.value if chunk.finish_reason else None
        if finish is not None and chunk.index in self._refused:
            finish = "stop"  # a refusal finishes normally in OpenAI's streams
        choice: dict[str, Any] = {
            "index": chunk.index,
            "delta": delta,
            "logprobs": _logprobs(chunk.logprobs) if chunk.logprobs else None,
            "finish_reason": finish,
        }
        return self._frame([choice])

    def _final(self, response: ChatResponse) -> bytes:
        out = b""
        if self._include_usage:
            out += self._frame([], usage=_usage(response))
        return out + b"data: [DONE]\n\n"

    def error(self, error: ApiError) -> bytes:
        """An in-band error event: the stream ends with it, never with a normal finish."""
        return b"data: " + orjson.dumps(error_body(error)) + b"\n\n"


def readable(thinking: tuple[Reasoning, ...]) -> str:
    """The text of a message's reasoning blocks that can be read (redacted ones cannot)."""
    return "".join(part.text for part in thinking if isinstance(part, ThinkingPart))


def _visible(chunk: Chunk) -> bool:
    """Whether a chunk has anything a Chat Completions delta carries."""
    return bool(chunk.text or chunk.tool_calls or chunk.finish_reason or chunk.logprobs)


def error_body(error: ApiError) -> dict[str, Any]:
    """OpenAI's error JSON."""
    return {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
    }


def model_object(name: str, owner: str, created: int) -> dict[str, Any]:
    """A model object, as `GET /v1/models/{model}` answers and `GET /v1/models` lists it."""
    return {"id": name, "object": "model", "created": created, "owned_by": owner}


def render_models(names: list[tuple[str, str]], created: int) -> bytes:
    """`GET /v1/models`: each (name, owner) as a model object."""
    return orjson.dumps(
        {"object": "list", "data": [model_object(n, owner, created) for n, owner in names]}
    )
