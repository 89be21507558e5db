"""Small builders for the scripted models and requests the resilience tests use."""

from __future__ import annotations

from modelyard.cost.prices import Price
from modelyard.errors import ModelError
from modelyard.model import Capabilities, Model, ModelInfo
from modelyard.providers.fake import Reply, ScriptedModel
from modelyard.types import ChatRequest, ChatResponse


def scripted(
    name: str,
    *script: Reply | str,
    default: Reply | str = "ok",
    provider: str | None = None,
    context_window: int | None = None,
    prefill: bool = False,
) -> ScriptedModel:
    """A scripted model: `script` in order, then `default`; priced at $1/M tokens each way."""
    info = ModelInfo(
        name=name,
        kind="fake",
        provider=provider,
        capabilities=Capabilities(context_window=context_window, prefill=prefill),
        price=Price(input=1.0, output=1.0),
    )
    return ScriptedModel(
        info=info,
        script=[r if isinstance(r, Reply) else Reply(text=r) for r in script],
        default=default if isinstance(default, Reply) else Reply(text=default),
    )


def fails(kind: str, *, retry_after: float | None = None, latency: float = 0.0) -> Reply:
    """A reply that raises the error of `kind`."""
    return Reply(error=kind, retry_after=retry_after, latency=latency)


class Sleeps:
    """A stand-in for asyncio.sleep that records what it was asked to wait, and waits not."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class CostlyFailure(Model):
    """Fails every call with `error`, reporting that the failed call cost `cost` USD."""

    def __init__(self, name: str, error: type[ModelError], cost: float) -> None:
        self.info = ModelInfo(name=name, kind="fake")
        self.error = error
        self.cost = cost
        self.calls = 0

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        exc = self.error("failed after spending", model=self.name)
        exc.cost = self.cost
        raise exc
