"""Server-sent events: the framing OpenAI, Anthropic and Gemini all stream in.

Parses the `text/event-stream` format (https://html.spec.whatwg.org/#event-stream-interpretation)
from lines as they arrive; comments and `id`/`retry` fields are ignored, as the providers use none.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event: its type (`message` when unnamed) and its data lines joined."""

    event: str
    data: str


class EventParser:
    """Feed it raw lines (with or without line endings); it returns each event as it completes."""

    __slots__ = ("_data", "_event", "size")

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self.size = 0
        """Characters of data in the event being read (a bound for the caller to enforce)."""

    def feed(self, raw: bytes) -> Event | None:
        """Take one line; return the event it completes, if any."""
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self.size += len(value)
        elif name == "event":
            self._event = value
        return None

    def flush(self) -> Event | None:
        """The event left pending when the stream ends without a blank line, if any."""
        return self._dispatch()

    def _dispatch(self) -> Event | None:
        if not self._data:
            self._event = ""
            return None
        event = Event(self._event or "message", "\n".join(self._data))
        self._event = ""
        self._data = []
        self.size = 0
        return event
