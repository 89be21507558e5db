"""The HTTP transport keeps every failure of a request inside the error tree."""

from __future__ import annotations

import socket

import pytest
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.server import Fault

from modelyard.errors import ModelTimeoutError, NotFoundError, UnavailableError
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


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_redirect_is_not_followed_with_the_key(streamed: bool) -> None:
    # A base_url that redirects (a moved endpoint, a proxy misconfigured or hostile) would have
    # had the key header carried to the address the redirect names.
    thief, moved = FakeOpenAI(), FakeOpenAI()
    with thief.running(), moved.running():
        moved.always(Fault(status=307, headers={"location": f"{thief.url}/v1/chat/completions"}))
        client = HttpClient()
        url = f"{moved.url}/v1/chat/completions"
        headers = {"api-key": "sk-secret-key"}
        try:
            with pytest.raises(NotFoundError) as caught:
                if streamed:
                    async with client.stream(url, headers=headers, body=b"{}"):
                        pass
                else:
                    await client.post(url, headers=headers, body=b"{}")
        finally:
            await client.aclose()
    assert thief.requests == []
    assert caught.value.code == "redirect" and not caught.value.retryable
    assert f"127.0.0.1:{thief.port}" in caught.value.message


@pytest.mark.parametrize(
    ("location", "named"),
    [("/v2/chat/completions", "the server's own"), ("http://127.0.0.1:99999/v1", "another")],
)
async def test_a_redirect_to_a_relative_or_unreadable_location_is_named_as_it_can_be(
    location: str, named: str
) -> None:
    moved = FakeOpenAI()
    with moved.running():
        moved.always(Fault(status=301, headers={"location": location}))
        client = HttpClient()
        try:
            with pytest.raises(NotFoundError) as caught:
                await client.post(f"{moved.url}/v1/chat/completions", headers={}, body=b"{}")
        finally:
            await client.aclose()
    assert caught.value.code == "redirect"
    if named == "another":
        assert "a redirect to another address" in caught.value.message
    else:
        assert f"a redirect to http://127.0.0.1:{moved.port}/…" in caught.value.message


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_request_whose_deadline_passed_is_not_sent(streamed: bool) -> None:
    # It was sent with a 1 ms timeout: the provider had it (and billed its input) and the
    # caller got a timeout all the same, say a judge asked after its members used up the time.
    server = FakeOpenAI()
    with server.running():
        client = HttpClient()
        url = f"{server.url}/v1/chat/completions"
        try:
            with pytest.raises(ModelTimeoutError) as caught:
                if streamed:
                    async with client.stream(url, headers={}, body=b"{}", deadline_left=-0.01):
                        pass
                else:
                    await client.post(url, headers={}, body=b"{}", deadline_left=0.0)
        finally:
            await client.aclose()
    assert server.requests == []
    assert caught.value.code == "deadline" and not caught.value.request_sent
    assert "deadline passed before the request was sent" in str(caught.value)


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_refused_connection_names_the_host_and_port_but_not_the_path(
    streamed: bool,
) -> None:
    with socket.socket() as sock:  # a port nothing listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1/chat/completions?key=secret"
    client = HttpClient()
    try:
        with pytest.raises(UnavailableError) as caught:
            if streamed:
                async with client.stream(url, headers={}, body=b"{}"):
                    pass
            else:
                await client.post(url, headers={}, body=b"{}")
    finally:
        await client.aclose()
    assert caught.value.code == "connect"
    assert f"cannot connect to 127.0.0.1:{port}: " in str(caught.value)
    assert "secret" not in str(caught.value) and "/v1" not in str(caught.value)
