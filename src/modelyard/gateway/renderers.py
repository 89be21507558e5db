"""How each API writes a finished answer, a stream chunk and an in-stream error."""

from __future__ import annotations

import time

from modelyard.gateway import anthropic_render, openai_render, responses_api, responses_render
from modelyard.gateway.errors import ApiError
from modelyard.types import ChatResponse, Chunk


class Renderer:
    """One API's output for one request."""

    def response(self, response: ChatResponse) -> bytes:
        """The whole answer's body."""
        raise NotImplementedError

    def chunk(self, chunk: Chunk) -> bytes:
        """The SSE frames for one chunk (the closing frames for the final one)."""
        raise NotImplementedError

    def error(self, error: ApiError) -> bytes:
        """The in-band error event that ends a broken stream."""
        raise NotImplementedError


class OpenAIRenderer(Renderer):
    """Chat Completions objects and `chat.completion.chunk` frames."""

    def __init__(self, request_id: str, target: str, include_usage: bool) -> None:
        self._id = request_id
        self._target = target
        self._chunks = openai_render.ChunkRenderer(
            request_id=request_id,
            target=target,
            created=int(time.time()),
            include_usage=include_usage,
        )

    def response(self, response: ChatResponse) -> bytes:
        return openai_render.render_response(response, request_id=self._id, target=self._target)

    def chunk(self, chunk: Chunk) -> bytes:
        return self._chunks.chunk(chunk)

    def error(self, error: ApiError) -> bytes:
        return self._chunks.error(error)


class ResponsesRenderer(Renderer):
    """Responses `response` objects and the Responses streaming events."""

    def __init__(self, request_id: str, call: responses_api.ResponsesCall) -> None:
        self._id = request_id
        self._call = call
        shape = responses_render.ResponseShape(
            request_id=request_id,
            target=call.target,
            created=int(time.time()),
            echo=call.echo,
            logprobs=call.request.logprobs,
        )
        self._stream = responses_render.EventRenderer(shape)

    def response(self, response: ChatResponse) -> bytes:
        return responses_render.render_response(
            response, request_id=self._id, target=self._call.target, echo=self._call.echo
        )

    def chunk(self, chunk: Chunk) -> bytes:
        return self._stream.chunk(chunk)

    def error(self, error: ApiError) -> bytes:
        return self._stream.error(error)


class AnthropicRenderer(Renderer):
    """Messages objects and the Messages streaming events."""

    def __init__(self, request_id: str, target: str) -> None:
        self._id = request_id
        self._target = target
        self._stream = anthropic_render.EventRenderer(request_id=request_id, target=target)

    def response(self, response: ChatResponse) -> bytes:
        return anthropic_render.render_message(response, request_id=self._id, target=self._target)

    def chunk(self, chunk: Chunk) -> bytes:
        return self._stream.chunk(chunk)

    def error(self, error: ApiError) -> bytes:
        return self._stream.error(error)
