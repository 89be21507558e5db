"""The Redis store's errors: where it is, never how it logs in."""

from __future__ import annotations

import socket

import pytest

from modelyard.errors import UnavailableError
from modelyard.state.base import Claim
from modelyard.state.redis import RedisStore


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "url",
    [
        "redis://:pw-in-userinfo-42@127.0.0.1:{port}/0",
        "redis://default:pw-in-userinfo-42@127.0.0.1:{port}/0",
        "redis://127.0.0.1:{port}/0?password=pw-in-query-42",
        "redis://127.0.0.1:{port}/0?username=u&password=pw-in-query-42",
    ],
)
async def test_an_unreachable_store_names_its_address_without_the_password(url: str) -> None:
    port = closed_port()
    store = RedisStore(url.format(port=port), prefix="t:", timeout=0.3)
    with pytest.raises(UnavailableError) as caught:
        await store.reserve([Claim(key="b", amount=1, limit=10)])
    await store.aclose()
    message = str(caught.value)
    assert f"127.0.0.1:{port}/0" in message and "unreachable" in message
    assert "-42" not in message
