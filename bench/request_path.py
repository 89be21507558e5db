"""CPU per request through the gateway's ASGI app in process: the gateway and the yard only,
no sockets, local fake models (`one`: a model; `two`: a two-model fallback whose first answers).

    .venv/bin/python bench/request_path.py            # µs a request (noisy on a shared host)
    .venv/bin/python bench/request_path.py 3000 key   # the same, with a virtual key's rpm
    .venv/bin/python bench/request_path.py 3000 tpm   # a key with an rpm and a tpm
    .venv/bin/python bench/request_path.py 3000 conc  # a key with an rpm and max_concurrency

On a shared host, count instructions instead: they move far less than time, though runs
of one tree still differ by up to ~10 % on a loaded machine (likely the background writers,
which wake on a clock: a slower run has more wake-ups), so compare trees in alternating runs.
The difference of two runs is the requests' own cost (imports and start-up cancel out):

    CG="valgrind --tool=callgrind --callgrind-out-file=/dev/null"
    $CG .venv/bin/python bench/request_path.py 0      # "Collected : A"
    $CG .venv/bin/python bench/request_path.py 500    # "Collected : B"
    # (B - A) / 1000 = instructions a request, over both systems (`key` after N: keyed)
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from modelyard.gateway.app import Gateway, create_app
from modelyard.gateway.keys import SqliteKeyStore

CONFIG = """
models:
  cheap:
    local: {type: fake, default: "the answer"}
    price: {input: 1.0, output: 2.0}
  big:
    local: {type: fake, default: "the big answer"}
    price: {input: 5.0, output: 10.0}
systems:
  one: cheap
  two:
    type: fallback
    chain: [cheap, big]
"""

WARM_UP = 50


async def ask(app: Gateway, body: bytes, secret: str | None) -> None:
    """One chat completion through the ASGI app (with the virtual key `secret`, if given)."""
    sent: list[dict[str, Any]] = []
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # the client never leaves
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"content-type", b"application/json")]
        + ([(b"authorization", b"Bearer " + secret.encode())] if secret else []),
        "client": ("127.0.0.1", 1),
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 200, sent


async def main(requests: int, keyed: bool, tpm: bool = False, conc: bool = False) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "bench.yaml"
        config.write_text(CONFIG)
        secret = None
        if keyed or tpm or conc:  # a key whose requests (and tokens) per minute, or requests
            # in flight, are counted, never reached
            store = SqliteKeyStore(Path(folder) / ".modelyard" / config.name / "keys.sqlite3")
            secret, _ = await store.create(
                "bench",
                rpm=10**9,
                tpm=10**12 if tpm else None,
                max_concurrency=10**6 if conc else None,
            )
        app = create_app(config)
        for system in ("one", "two"):
            body = orjson.dumps({"model": system, "messages": [{"role": "user", "content": "hi"}]})
            for _ in range(WARM_UP):
                await ask(app, body, secret)
            started = time.process_time()
            for _ in range(requests):
                await ask(app, body, secret)
            spent = time.process_time() - started
            print(f"{system}: {spent / max(requests, 1) * 1e6:.1f} µs CPU a request")
        await app.aclose()


if __name__ == "__main__":
    asyncio.run(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 3000,
            "key" in sys.argv[2:],
            "tpm" in sys.argv[2:],
            "conc" in sys.argv[2:],
        )
    )
