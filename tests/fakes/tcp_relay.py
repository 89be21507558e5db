"""A TCP relay in front of a real server, to cut it off and bring it back as an outage would."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any


class TcpRelay:
    """Listens on a port of 127.0.0.1 and relays every connection to `target`, from a thread
    of its own (so code that blocks the test's event loop can still reach it). `cut()` closes
    the listener and every connection through it; `restore()` listens on the same port again.
    `stall()` keeps every connection open but passes nothing on (a partition, a server that
    hangs) until `flow()`. `lose_replies_after(marker)` passes requests on but holds the replies
    of the connection a request holding `marker` went through (the server did the work, and the
    client never hears of it) until `flow()`; other connections, such as the one a client opens
    to cancel the lost query, still get theirs, as when one connection's reply is lost.
    `delay(seconds)` holds everything passed on that long (a slow link), in order."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._held: set[asyncio.Event] = set()
        """Each deafened connection's gate for its replies."""
        self._deafen_on: bytes | None = None
        self._delay = 0.0
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def restore(self) -> None:
        """Listen (on the port used before, if any)."""
        self._run(self._listen())

    def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        self._run(self._cut())

    def stall(self) -> None:
        """Keep the connections open, and pass nothing on."""
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def lose_replies_after(self, marker: bytes) -> None:
        """Once a request holding `marker` has been passed on, hold every reply."""
        self._run(self._arm(marker))

    def delay(self, seconds: float) -> None:
        """Hold what is passed on, each way, `seconds` longer from now on (0: no longer)."""
        self._loop.call_soon_threadsafe(setattr, self, "_delay", seconds)

    def flow(self) -> None:
        """Pass data on again."""
        self._loop.call_soon_threadsafe(self._flow)

    async def _arm(self, marker: bytes) -> None:
        self._deafen_on = marker

    def _flow(self) -> None:
        self._deafen_on = None
        self._flowing.set()
        for answering in self._held:
            answering.set()
        self._held.clear()

    def close(self) -> None:
        """Cut, and stop the relay's thread."""
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self, work: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(work, self._loop).result(5)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        answering = asyncio.Event()  # this connection's replies pass
        answering.set()
        await asyncio.gather(
            self._pipe(reader, up_writer, answering, request=True),
            self._pipe(up_reader, writer, answering, request=False),
        )

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        answering: asyncio.Event,
        *,
        request: bool,
    ) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                if self._delay:
                    await asyncio.sleep(self._delay)
                if not request:
                    await answering.wait()
                elif self._deafen_on is not None and self._deafen_on in data:
                    answering.clear()  # before it is sent: the reply cannot overtake it
                    self._held.add(answering)
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
