"""A fast OpenAI-compatible upstream for the gateway benchmark: never the bottleneck.

    python bench/gateway/mock_upstream.py [--host 127.0.0.1] [--port 18000]

An asyncio Protocol on uvloop with httptools parsing: no framework, keep-alive, a fixed answer.
`POST .../chat/completions` gets a small chat.completion (with token logprobs when the body
asks for them); with `"stream": true` in the body,
an SSE stream of 5 content events, a usage event and `[DONE]`, in chunked transfer encoding
(one write). `GET /v1/models` lists the one model. Anything else is a 404.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

import httptools
import orjson
import uvloop

MODEL = "mock-model"

TOKENS = ["Hello", " from", " the", " mock", " upstream", "."]


def _answer(logprobs: bool) -> bytes:
    content = [
        {"token": t, "logprob": -0.05, "bytes": list(t.encode()), "top_logprobs": []}
        for t in TOKENS
    ]
    return orjson.dumps(
        {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": 1730000000,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(TOKENS)},
                    # Asked-for logprobs let a logprob-estimating cascade accept the first stage
                    # (mean token probability 0.95).
                    "logprobs": {"content": content, "refusal": None} if logprobs else None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
        }
    )


def _event(choices: list[object], usage: object = None) -> bytes:
    chunk = {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1730000000,
        "model": MODEL,
        "choices": choices,
        "usage": usage,
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _stream_body() -> bytes:
    words = ["Hello", " from", " the", " mock", " upstream."]
    events = [
        _event([{"index": 0, "delta": {"role": "assistant", "content": w}, "finish_reason": None}])
        if i == 0
        else _event([{"index": 0, "delta": {"content": w}, "finish_reason": None}])
        for i, w in enumerate(words[:-1])
    ]
    events.append(_event([{"index": 0, "delta": {"content": words[-1]}, "finish_reason": "stop"}]))
    events.append(_event([], {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}))
    events.append(b"data: [DONE]\n\n")
    # Each event its own chunk, as a real server flushes them; sent in one write.
    return b"".join(b"%x\r\n%b\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"


MODELS = orjson.dumps(
    {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "mock"}]}
)


def _response(status: bytes, content_type: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: " + content_type + b"\r\n"
        b"content-length: %d\r\nconnection: keep-alive\r\n\r\n" % len(body) + body
    )


JSON_RESPONSE = _response(b"200 OK", b"application/json", _answer(logprobs=False))
LOGPROBS_RESPONSE = _response(b"200 OK", b"application/json", _answer(logprobs=True))
MODELS_RESPONSE = _response(b"200 OK", b"application/json", MODELS)
NOT_FOUND = _response(b"404 Not Found", b"application/json", b'{"error":{"message":"no route"}}')
STREAM_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n" + _stream_body()
)


class MockProtocol(asyncio.Protocol):
    """One keep-alive connection: parse requests, answer each at once."""

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.close()

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        url, body = self._url, b"".join(self._body)
        self._url, self._body = b"", []
        if url.endswith(b"/chat/completions"):
            if _wants_stream(body):
                reply = STREAM_RESPONSE
            elif b'"logprobs":true' in body or b'"logprobs": true' in body:
                reply = LOGPROBS_RESPONSE
            else:
                reply = JSON_RESPONSE
        elif url.endswith(b"/models"):
            reply = MODELS_RESPONSE
        else:
            reply = NOT_FOUND
        if self._transport is not None:
            self._transport.write(reply)


def _wants_stream(body: bytes) -> bool:
    # Only parse when the word appears: keeps the common path at a substring search.
    if b'"stream"' not in body:
        return False
    try:
        return orjson.loads(body).get("stream") is True
    except (orjson.JSONDecodeError, AttributeError):
        return False


async def serve(host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(MockProtocol, host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"mock upstream on http://{host}:{port}/v1", flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18000)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
