"""A callable model for tests that records every request it sees (test-only state)."""

from __future__ import annotations

from modelyard.types import ChatRequest

SEEN: list[ChatRequest] = []


def echo_length(request: ChatRequest) -> str:
    """Answers with the prompt's length parity, and remembers the request."""
    SEEN.append(request)
    return "even" if len(request.last_user_text) % 2 == 0 else "odd"
