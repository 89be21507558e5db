"""What a hot reload replaces is closed once nothing uses it: the requests still running on the
old config keep their pools and services to the end, and what the new config still uses is
never closed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import httpx2
import openai
import pytest
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.server import Fault
from tests.gateway.conftest import Running, hammering

from modelyard.config.resources import Resources
from modelyard.cost.ledger import Ledger
from modelyard.errors import ConfigError, UnavailableError
from modelyard.live import LiveConfig
from modelyard.providers.http import HttpClient
from modelyard.state.factory import shared_store


def config(connections: int, *, tracing: str = "", state: str = "") -> str:
    return f"""
providers:
  up:
    type: openai
    base_url: http://127.0.0.1:9/v1
    api_key: sk-test
    max_connections: {connections}
  steady:
    type: openai
    base_url: http://127.0.0.1:9/v1
    api_key: sk-test
models:
  gpt: {{provider: up, id: gpt-4o-mini-2024-07-18, price: {{input: 1, output: 2}}}}
  other: {{provider: steady, id: gpt-4o-mini-2024-07-18, price: {{input: 1, output: 2}}}}
{tracing}{state}"""


@pytest.fixture
def closed(monkeypatch: pytest.MonkeyPatch) -> list[HttpClient]:
    """Every HttpClient closed during the test, in order."""
    seen: list[HttpClient] = []
    original = HttpClient.aclose

    async def spy(self: HttpClient) -> None:
        seen.append(self)
        await original(self)

    monkeypatch.setattr(HttpClient, "aclose", spy)
    return seen


async def settled(live: LiveConfig) -> None:
    """Wait for the releases a reload or a finished request started."""
    await asyncio.sleep(0)
    while live._releases:
        await asyncio.gather(*live._releases)


async def test_a_replaced_pool_closes_when_the_last_request_on_it_ends(
    tmp_path: Path, closed: list[HttpClient]
) -> None:
    path = tmp_path / "modelyard.yaml"
    path.write_text(config(10))
    live = LiveConfig(path, grace=0)
    pools = dict(live.resources.clients)
    assert len(pools) == 2
    with live.serving() as old:
        path.write_text(config(20))
        await live.reload()
        await settled(live)
        assert closed == [], "closed under a request still running on the old config"
        assert live.current is not old
    await settled(live)
    replaced = [pool for key, pool in pools.items() if key.startswith("up|")]
    assert closed == replaced
    assert set(live.resources.clients.values()) >= {
        pools[k] for k in pools if k.startswith("steady|")
    }
    assert len(live.resources.clients) == 2
    await live.aclose()


async def test_an_unchanged_reload_closes_nothing(tmp_path: Path, closed: list[HttpClient]) -> None:
    path = tmp_path / "modelyard.yaml"
    path.write_text(config(10))
    live = LiveConfig(path, grace=0)
    pools = dict(live.resources.clients)
    for _ in range(3):
        path.write_text(config(10) + "# a comment\n")
        await live.reload()
    await settled(live)
    assert closed == []
    assert live.resources.clients == pools
    await live.aclose()
    assert sorted(map(id, closed)) == sorted(map(id, pools.values()))


async def test_a_config_changed_back_and_forth_keeps_what_the_current_one_uses(
    tmp_path: Path, closed: list[HttpClient]
) -> None:
    path = tmp_path / "modelyard.yaml"
    path.write_text(config(10))
    live = LiveConfig(path, grace=0)
    with live.serving():  # the first generation is held while two more come and go
        path.write_text(config(20))
        await live.reload()
        path.write_text(config(10))
        await live.reload()
        await settled(live)
    await settled(live)
    # The 20-connection pool is the only one no generation uses any more.
    assert [key for key in live.resources.clients if key.startswith("up|")] == [
        key for key in live.resources.clients if "|10|" in key
    ]
    assert len(closed) == 1
    assert closed[0] not in live.resources.clients.values()
    await live.aclose()


def exporter_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("OtelBatchSpan"))


async def test_tracing_changed_five_times_leaves_one_exporter(tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.sdk")
    path = tmp_path / "modelyard.yaml"
    before = exporter_threads()

    def traced(ratio: float) -> str:
        return config(
            10,
            tracing=f"tracing: {{exporter: otlp, endpoint: 'http://127.0.0.1:9/v1/traces', "
            f"sample_ratio: {ratio}}}\n",
        )

    path.write_text(traced(1.0))
    live = LiveConfig(path, grace=0)
    for i in range(5):
        path.write_text(traced(0.5 - i / 20))
        await live.reload()
    await settled(live)
    assert exporter_threads() - before == 1
    await live.aclose()
    assert exporter_threads() == before


async def test_a_refused_reload_closes_what_its_build_had_made(tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.sdk")
    path = tmp_path / "modelyard.yaml"
    before = exporter_threads()
    tracing = "tracing: {exporter: otlp, endpoint: 'http://127.0.0.1:9/v1/traces'}\n"
    path.write_text(config(10, tracing=tracing))
    live = LiveConfig(path, grace=0)
    # A new exporter is made before the systems are built, and a missing artifact fails there.
    broken = config(10, tracing=tracing.replace("}", ", sample_ratio: 0.5}"))
    broken += "embedders:\n  hash: {local: {type: hashing}}\n"
    broken += "systems:\n  pick:\n    type: router\n    routes: {a: gpt, b: other}\n"
    broken += "    default: a\n    learned: {artifact: missing.npz, embedder: hash}\n"
    for _ in range(3):
        path.write_text(broken)
        with pytest.raises(ConfigError, match=r"missing\.npz"):
            await live.reload()
    assert exporter_threads() - before == 1
    await live.aclose()
    assert exporter_threads() == before


async def test_the_gateways_own_store_survives_a_state_change(tmp_path: Path) -> None:
    path = tmp_path / "modelyard.yaml"
    path.write_text(config(10, state="state: {backend: sqlite, path: one.db}\n"))
    live = LiveConfig(path, grace=0)
    loaded = live.current.loaded
    # What create_app does at start: key limits and key budgets stay on the started store.
    started = shared_store(loaded.config.state, loaded.base_dir, live.resources)
    path.write_text(config(10, state="state: {backend: sqlite, path: two.db}\n"))
    diff = await live.reload()
    assert diff.restart_required == ["state"]
    await settled(live)
    assert started in live.resources.services.values()
    assert await started.adjust("still-open", 1) == 1
    await live.aclose()


async def test_the_grace_counts_from_the_end_of_the_last_request(
    tmp_path: Path, closed: list[HttpClient]
) -> None:
    path = tmp_path / "modelyard.yaml"
    path.write_text(config(10))
    live = LiveConfig(path, grace=1.0)
    with live.serving():
        path.write_text(config(20))
        await live.reload()
        await asyncio.sleep(0.8)  # the request ends just before the reload's own wait does
    await asyncio.sleep(0.4)
    assert closed == [], "closed 0.4 s after the last request on it ended, inside a 1 s grace"
    await settled(live)
    assert len(closed) == 1
    await live.aclose()


async def test_a_refused_reload_leaves_the_state_store_the_gateway_reports(
    tmp_path: Path,
) -> None:
    path = tmp_path / "modelyard.yaml"
    path.write_text(config(10, state="state: {backend: sqlite, path: one.db}\n"))
    live = LiveConfig(path, grace=0)
    loaded = live.current.loaded
    started = shared_store(loaded.config.state, loaded.base_dir, live.resources)
    # A shared backend's store is made first of all, and the missing artifact fails later.
    broken = config(10, state="state: {backend: redis, url: 'redis://127.0.0.1:9/0'}\n")
    broken += "embedders:\n  hash: {local: {type: hashing}}\n"
    broken += "systems:\n  pick:\n    type: router\n    routes: {a: gpt, b: other}\n"
    broken += "    default: a\n    learned: {artifact: missing.npz, embedder: hash}\n"
    path.write_text(broken)
    with pytest.raises(ConfigError, match=r"missing\.npz"):
        await live.reload()
    # /readyz and /metrics report (and probe) this store: not the refused build's, now closed.
    assert live.resources.state is started
    await live.aclose()


async def test_shutdown_lets_a_release_under_way_finish_its_closing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    finished: list[Ledger] = []
    original = Ledger.aclose

    async def slow(self: Ledger) -> None:
        await asyncio.sleep(0.2)  # a PostgreSQL ledger's last write, say
        await original(self)
        finished.append(self)

    monkeypatch.setattr(Ledger, "aclose", slow)
    path = tmp_path / "modelyard.yaml"
    path.write_text(config(10) + "ledger: {path: one.db}\n")
    live = LiveConfig(path, grace=0)
    path.write_text(config(10) + "ledger: {path: two.db}\n")
    await live.reload()
    await asyncio.sleep(0.05)  # the release is closing the first ledger when shutdown comes
    await live.aclose()
    assert len(finished) == 2, "the replaced ledger's close was cut short: its rows are lost"


def test_streams_in_flight_finish_while_reloads_replace_their_pool(
    serve_gateway: Callable[..., Running],
) -> None:
    fake = FakeOpenAI(api_key="sk-up")
    with fake.running():
        fake.always(Fault(chunk_delay=0.05))

        def text(connections: int) -> str:
            return f"""
providers:
  up:
    type: openai
    base_url: {fake.url}/v1
    api_key: sk-up
    max_connections: {connections}
    retry: {{attempts: 0}}
models:
  gpt: {{provider: up, id: gpt-4o-mini-2024-07-18, price: {{input: 1, output: 2}}}}
systems:
  main: gpt
"""

        running = serve_gateway(text=text(10))
        running.app.live.grace = 0
        client = openai.OpenAI(base_url=running.openai_url, api_key="x", max_retries=0)

        def ask() -> str:
            stream = client.chat.completions.create(
                model="main",
                messages=[{"role": "user", "content": "one two three four five six"}],
                stream=True,
            )
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

        with hammering(ask, clients=4) as traffic:
            for i in range(5):
                running.config.write_text(text(11 + i))
                reply = httpx2.post(f"{running.url}/admin/reload")
                assert reply.status_code == 200, reply.text
                asyncio.run(asyncio.sleep(0.3))
    assert traffic.failures == []
    assert len(traffic.answers) >= 4  # streams ran across the reloads (a loaded host runs fewer)
    assert set(traffic.answers) == {"Echo: one two three four five six"}
    # Once the last stream on an older config ends, only the current pool is left.
    for _ in range(100):
        if len(running.app.live.resources.clients) == 1:
            break
        asyncio.run(asyncio.sleep(0.05))
    assert len(running.app.live.resources.clients) == 1


class Weights:
    """A loaded local model: `close` frees it, and blocks (llama.cpp waits for its worker)."""

    def __init__(self) -> None:
        self.closed_in: str | None = None

    def close(self) -> None:
        self.closed_in = threading.current_thread().name


async def test_shutdown_closes_loaded_models_off_the_event_loop() -> None:
    resources = Resources()
    with resources.tracking():
        weights = resources.cached("weights", Weights)
    await resources.aclose()
    assert weights.closed_in is not None
    assert weights.closed_in != threading.current_thread().name
    assert resources.loaded == {}


async def test_release_leaves_what_was_taken_outside_a_build() -> None:
    resources = Resources()
    with resources.tracking() as built:
        inside = resources.cached("inside", Weights)
    outside = resources.cached("outside", Weights)
    assert await resources.release(built | {("loaded", "outside")}) == 1
    assert inside.closed_in is not None and outside.closed_in is None
    assert list(resources.loaded) == ["outside"]


async def test_the_workers_circuits_stay_in_the_state_file_across_a_reload(tmp_path: Path) -> None:
    # `serve --workers 2`: each worker's circuits are in the file the others read, before a
    # reload and after it (a reload keeps the started store)
    path = tmp_path / "modelyard.yaml"
    path.write_text(config(10))
    live = LiveConfig(path, grace=0, workers=2)
    other = LiveConfig(path, grace=0, workers=2)  # another worker on the same file
    (breaker,) = [b for b in live.current.built.health if b.scope == "model:gpt"]
    failed = UnavailableError("down", model="gpt")
    for _ in range(breaker.policy.min_calls):
        await breaker.record(await breaker.admit(), failed)
    path.write_text(config(20))
    await live.reload()
    for worker in (live, other):
        (circuit,) = [c for c in (await worker.current.health()).circuits if c.scope == "model:gpt"]
        assert circuit.state == "open"
    await live.aclose()
    await other.aclose()
