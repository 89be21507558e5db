"""The floor: the least a Python gateway on this stack can do, for comparison in run.py.

    python bench/gateway/raw_proxy.py UPSTREAM_BASE_URL [--port 18090]

uvicorn (uvloop + httptools, no access log) around a raw ASGI callable that reads the body,
parses it with orjson, POSTs it to the upstream through one shared aiohttp session, parses the
answer and returns its bytes. No routing, keys, decisions, logging or metrics: what is left is
the HTTP server and client, which every gateway on this stack pays for.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import uvicorn

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class RawProxy:
    """POST /v1/chat/completions relayed to the upstream; anything else 404."""

    def __init__(self, upstream: str) -> None:
        self.url = upstream.rstrip("/") + "/chat/completions"
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    connector = aiohttp.TCPConnector(limit=100)
                    self.session = aiohttp.ClientSession(connector=connector)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self.session is not None:
                        await self.session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        request = orjson.loads(b"".join(chunks))
        assert self.session is not None
        async with self.session.post(
            self.url, data=orjson.dumps(request), headers={"content-type": "application/json"}
        ) as response:
            payload = await response.read()
            status = response.status
        body = orjson.dumps(orjson.loads(payload))
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("upstream", help="the upstream's base URL, e.g. http://127.0.0.1:18000/v1")
    parser.add_argument("--port", type=int, default=18090)
    args = parser.parse_args()
    uvicorn.run(
        RawProxy(args.upstream),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
