"""The HTTP transport keeps every failure of a request inside the error tree."""

from __future__ import annotations

import pytest

from modelyard.errors import UnavailableError
from modelyard.providers.http import HttpClient

# aiohttp raises a bare ValueError for credentials in the URL beside an Authorization header.
_REFUSED_BY_AIOHTTP = "http://user:pw@127.0.0.1:9/v1/chat/completions"


async def test_a_request_the_client_refuses_to_send_is_an_unavailable_model_error() -> None:
    client = HttpClient()
    try:
        with pytest.raises(UnavailableError) as caught:
            await client.post(
                _REFUSED_BY_AIOHTTP, headers={"Authorization": "Bearer k"}, body=b"{}"
            )
    finally:
        await client.aclose()
    assert caught.value.code == "client_error"
    assert not caught.value.retryable
    assert "pw" not in str(caught.value)


async def test_a_stream_the_client_refuses_to_open_is_an_unavailable_model_error() -> None:
    client = HttpClient()
    try:
        with pytest.raises(UnavailableError) as caught:
            async with client.stream(
                _REFUSED_BY_AIOHTTP, headers={"Authorization": "Bearer k"}, body=b"{}"
            ):
                pass
    finally:
        await client.aclose()
    assert caught.value.code == "client_error"
