"""A stream's events come out whole however the network cuts the body into packets."""

from __future__ import annotations

from typing import Any, cast

import aiohttp

from modelyard.providers.http import StreamReply, Timeouts


class _Packets:
    """Stands in for aiohttp's body reader: each read returns the next packet, then b""."""

    def __init__(self, packets: list[bytes]) -> None:
        self.packets = list(packets)

    async def readany(self) -> bytes:
        return self.packets.pop(0) if self.packets else b""


class _Response:
    def __init__(self, packets: list[bytes]) -> None:
        self.status = 200
        self.headers: dict[str, str] = {}
        self.content = _Packets(packets)


async def _events(packets: list[bytes]) -> list[tuple[str, str]]:
    reply = StreamReply(cast(aiohttp.ClientResponse, cast(Any, _Response(packets))), Timeouts())
    return [(e.event, e.data) for e in [e async for e in reply.events()]]


async def test_lines_and_characters_cut_across_packets_are_joined() -> None:
    body = 'event: delta\r\ndata: {"text": "héllo"}\r\n\r\ndata: [DONE]\n\n'.encode()
    cut = body.index("é".encode()) + 1  # inside the two bytes of "é"
    packets = [body[:5], body[5:cut], body[cut : cut + 3], body[cut + 3 :]]
    assert await _events(packets) == [("delta", '{"text": "héllo"}'), ("message", "[DONE]")]


async def test_a_last_event_without_its_blank_line_or_newline_is_kept() -> None:
    assert await _events([b"data: one\n\n", b"data: tw", b"o"]) == [
        ("message", "one"),
        ("message", "two"),
    ]
