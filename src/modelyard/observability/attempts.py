"""A span for each try of a model that retries, under the model's span.

The model's span (`Traced`, `chat <model id>`) is the whole call as its caller sees it: the
answer, or the error it ended with. Each try the retry wrapper makes is a child span of its own,
`attempt`, as the HTTP conventions make each resend of a request its own span: its number
(`modelyard.attempt`, from 1; `http.request.resend_count` on a retry), the wait before it
(`modelyard.retry_wait_ms`), and how it failed (`error.type`, status ERROR, and the provider's
`http.response.status_code` when it answered with an error). The waits show as
gaps between them in a trace viewer. A try's span is current while it runs, so the provider
request it makes carries that span's `traceparent`. Token counts and costs stay on the model's
span only, so dashboards summing them over spans count each call once.

Made only when the config traces; a model without retries has no tries to show.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from modelyard.errors import ModelError
from modelyard.observability.tracing import Traced, Tracing
from modelyard.types import ChatRequest, ChatResponse

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from modelyard.model import Model


class _TracedTry(Traced):
    """One try of a retried model: a `Traced` with the try's span name and attributes."""

    def __init__(self, inner: Model, tracing: Tracing) -> None:
        super().__init__(inner, tracing, system=False, config_version="")
        self.span_name = "attempt"
        self.fixed = {"modelyard.node": self.name}

    def _start(self, request: ChatRequest) -> Span:
        return self.tracer.start_span(self.span_name, kind=self.kind, attributes=self.fixed)

    def _outcome(self, response: ChatResponse | None, error: ModelError | None) -> dict[str, Any]:
        if error is None:
            return {}
        if error.upstream_status is None:  # no reply (a timeout, a refused connection)
            return {"error.type": error.kind}
        return {"error.type": error.kind, "http.response.status_code": error.upstream_status}


class TracedTries:
    """What a `RetryModel` calls for each try of `inner` when the config traces: `inner` inside
    the try's span."""

    __slots__ = ("_template",)

    def __init__(self, inner: Model, tracing: Tracing) -> None:
        self._template = _TracedTry(inner, tracing)

    def __call__(self, number: int, waited: float) -> Model:
        """`inner` as try `number` (from 1) calls it, `waited` seconds after the last one."""
        traced = copy.copy(self._template)
        fixed: dict[str, Any] = {**traced.fixed, "modelyard.attempt": number}
        if number > 1:
            fixed["http.request.resend_count"] = number - 1
            fixed["modelyard.retry_wait_ms"] = round(waited * 1000, 1)
        traced.fixed = fixed
        return traced
