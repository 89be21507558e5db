"""A real gateway on a real socket: uvicorn in a background thread serving a temp config."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import anthropic
import pytest
import uvicorn
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.server import free_port

from modelyard.gateway.app import Gateway, create_app

SYSTEMS = """
models:
  cheap:
    local:
      type: fake
      answers:
        "ping": "pong"
        "fail": {error: unavailable}
        "slow": {text: "late", latency: 0.3}
        "limited": {error: rate_limited, retry_after: 7}
        "too long": {error: context_length}
      default: "the cheap answer"
    price: {input: 1.0, output: 2.0}
  strong:
    local: {type: fake, default: "the strong answer"}
    price: {input: 10.0, output: 20.0}
  broken:
    local: {type: fake, default: {error: unavailable}}
embedders:
  hash:
    local: {type: hashing, dimensions: 16}
systems:
  support:
    type: fallback
    chain: [broken, cheap]
"""


@dataclass
class Running:
    """A served gateway: its base URL and the app object (for inspecting state)."""

    url: str
    app: Gateway
    config: Path

    @property
    def openai_url(self) -> str:
        """Base URL for the OpenAI SDK."""
        return self.url + "/v1"


def start_gateway(config: Path, *, workers: int = 1) -> tuple[Running, Callable[[], None]]:
    """Serve the gateway for `config` on a free port, as one of `workers` processes serving it;
    returns it and the function stopping it."""
    app = create_app(config, workers=workers)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            lifespan="on",
            log_level="warning",
            loop="asyncio",
            timeout_graceful_shutdown=5,
        )
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("gateway did not start")
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return Running(url=f"http://127.0.0.1:{port}", app=app, config=config), stop


@pytest.fixture
def serve_gateway(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """Start a gateway for the given config text (extra YAML appended to SYSTEMS)."""
    stops: list[Callable[[], None]] = []

    def start(extra: str = "", *, text: str | None = None) -> Running:
        config = tmp_path / "config.yaml"
        config.write_text(text if text is not None else SYSTEMS + extra, encoding="utf-8")
        running, stop = start_gateway(config)
        stops.append(stop)
        return running

    yield start
    for stop in stops:
        stop()


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Whether `condition` holds within `seconds` (checked every 50 ms)."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


@asynccontextmanager
async def watched(config: Path) -> AsyncIterator[Gateway]:
    """A gateway watching `config` (`gateway.watch_config`), once its watch is armed."""
    app = create_app(config)
    app.watch_config = True
    app.start()
    try:
        await asyncio.sleep(0.3)  # let the watch arm
        yield app
    finally:
        await app.aclose()


UPSTREAM_KEY = "sk-upstream-secret-0123456789"


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    """A fake OpenAI upstream taking `UPSTREAM_KEY` (the one `hosted_embedder` calls): push
    faults or script replies on it."""
    fake = FakeOpenAI(api_key=UPSTREAM_KEY)
    with fake.running():
        yield fake


CLAUDE_KEY = "sk-ant-upstream-secret-0123456789"


@pytest.fixture
def claude_fake() -> Iterator[FakeAnthropic]:
    """A fake Anthropic upstream taking `CLAUDE_KEY`: script turns or push faults on it."""
    with FakeAnthropic(api_key=CLAUDE_KEY).running() as fake:
        assert isinstance(fake, FakeAnthropic)
        yield fake


def anthropic_client(running: Running) -> anthropic.Anthropic:
    """The official Anthropic SDK pointed at the gateway (no retries: tests see every answer)."""
    return anthropic.Anthropic(base_url=running.url, api_key="anything", max_retries=0)


@pytest.fixture
def hosted_embedder(
    serve_gateway: Callable[..., Running], upstream: FakeOpenAI
) -> Callable[[str], Running]:
    """Start a gateway with `emb`, a hosted embedder at $1,000 per million input tokens on the
    fake OpenAI upstream (provider `up`, which waits up to 5 s for an answer), a ledger written
    every 50 ms, and `extra` YAML."""
    emb = "embedders:\n  emb: {provider: up, id: text-embedding-3-small, price: {input: 1000}}"
    head = SYSTEMS.replace("embedders:", emb)
    providers = (
        f'providers:\n  up: {{type: openai, base_url: "{upstream.url}/v1", '
        f"api_key: {UPSTREAM_KEY}, timeouts: {{total: 5}}}}\n"
    )
    ledger = "ledger: {flush_interval: 0.05}\n"
    return lambda extra="": serve_gateway(text=head + providers + ledger + extra)


@dataclass
class Traffic:
    """What clients asking over and over got: the answers and the failures."""

    answers: list[str]
    failures: list[BaseException]


@contextmanager
def hammering(ask: Callable[[], str], clients: int) -> Iterator[Traffic]:
    """`clients` threads calling `ask` over and over until the block ends (each finishes the
    call it is in)."""
    traffic = Traffic(answers=[], failures=[])
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                traffic.answers.append(ask())
            except BaseException as exc:
                traffic.failures.append(exc)

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield traffic
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
