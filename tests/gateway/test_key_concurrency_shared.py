"""A virtual key's `max_concurrency` counted by every process sharing the state store: two
gateways on one SQLite file (as `serve --workers 2` runs them), one Redis or one PostgreSQL
admit exactly the key's limit between them, give each slot back however its request ends (an
answer, an upstream error, a client gone mid-stream), and get back the slots of a holder that
was killed once its lease expires. The official SDKs and raw HTTP as clients, the fake OpenAI
upstream streaming slowly for the requests that hold their slots."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.server import Fault, free_port
from tests.gateway.conftest import UPSTREAM_KEY, Running, start_gateway
from tests.gateway.test_key_limits import a_call
from tests.gateway.test_keys import create_key
from tests.state.conftest import POSTGRES_URL, REDIS_URL, fresh_tables, unique_prefix

from modelyard.cost.budget_counters import Hold
from modelyard.cost.budget_leases import KEY_SLOTS, LeaseKeeper
from modelyard.gateway.app import Gateway, create_app
from modelyard.gateway.key_limits import KeyLimits
from modelyard.gateway.keys import VirtualKey
from modelyard.state.base import Claim, Lease, StateStore
from modelyard.state.postgres import PostgresStore
from modelyard.state.redis import RedisStore
from modelyard.state.sqlite import SqliteStore

LIMIT = 2
HI = [{"role": "user", "content": "hi"}]
LONG = " ".join(["word"] * 400)
"""What a held request streams, a word every `CHUNK_DELAY`: far longer than any test waits."""
CHUNK_DELAY = 0.1


@pytest.fixture
async def postgres_tables() -> AsyncIterator[str]:
    """A table prefix for the state store no other run uses, its tables dropped afterwards."""
    async for name in fresh_tables(PostgresStore):
        yield name


@dataclass
class Shared:
    """Where the two gateways count: the `state:` section, and a client of it for the test."""

    section: str
    store: Callable[[], StateStore]


@pytest.fixture(
    params=[
        pytest.param("sqlite"),
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Shared]:
    """Each shared backend in turn."""
    if request.param == "sqlite":
        path = tmp_path / "state.db"
        yield Shared(
            f"state: {{backend: sqlite, path: '{path}', hold_lease: 10}}\n",
            lambda: SqliteStore(path),
        )
    elif request.param == "redis":
        prefix = unique_prefix()
        yield Shared(
            f"state: {{backend: redis, url: '{REDIS_URL}', prefix: '{prefix}', hold_lease: 10}}\n",
            lambda: RedisStore(REDIS_URL, prefix=prefix),
        )
        asyncio.run(_cleared(RedisStore(REDIS_URL, prefix=prefix)))
    else:
        tables = request.getfixturevalue("postgres_tables")
        yield Shared(
            f"state: {{backend: postgres, url: '{POSTGRES_URL}', prefix: '{tables}', "
            "hold_lease: 10}\n",
            lambda: PostgresStore(POSTGRES_URL, table_prefix=tables),
        )


async def _cleared(store: RedisStore) -> None:
    await store.clear_prefix()
    await store.aclose()


@pytest.fixture
def gateways(
    tmp_path: Path, upstream: FakeOpenAI, shared: Shared
) -> Iterator[tuple[Running, Running]]:
    """Two gateways serving one config (one key file, one state store), as two workers of
    `serve --workers 2` or two replicas: `held` streams from the fake upstream, `cheap`
    answers at once, `broken` fails."""
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
providers:
  up: {{type: openai, base_url: "{upstream.url}/v1", api_key: {UPSTREAM_KEY}}}
models:
  held: {{provider: up, id: gpt-4o-mini-2024-07-18, price: {{input: 0.15, output: 0.6}}}}
  cheap:
    local: {{type: fake, default: "the cheap answer"}}
  broken:
    local: {{type: fake, default: {{error: unavailable}}}}
gateway:
  admin_key: admin-secret-123456
{shared.section}""",
        encoding="utf-8",
    )
    upstream.always(Fault(chunk_delay=CHUNK_DELAY))
    one, stop_one = start_gateway(config, workers=2)
    two, stop_two = start_gateway(config, workers=2)
    try:
        yield one, two
    finally:
        stop_one()
        stop_two()


@pytest.fixture
def key(gateways: tuple[Running, Running]) -> dict[str, object]:
    """A key with `LIMIT` concurrent slots, made through the first gateway."""
    return create_key(gateways[0], name="two-at-a-time", max_concurrency=LIMIT)


@contextmanager
def holding(running: Running, upstream: FakeOpenAI, key: dict[str, object]) -> Iterator[None]:
    """A stream of `held` admitted and running (its first chunk read) until the block ends,
    when its client hangs up mid-stream."""
    upstream.script(Reply(text=LONG))
    with (
        httpx2.Client(timeout=30) as client,
        client.stream(
            "POST",
            f"{running.url}/v1/chat/completions",
            json={"model": "held", "messages": HI, "stream": True},
            headers={"authorization": f"Bearer {key['key']}"},
        ) as reply,
    ):
        assert reply.status_code == 200, reply.read()
        lines = reply.iter_lines()
        assert next(line for line in lines if line).startswith("data: ")
        yield


def ask(running: Running, key: dict[str, object], model: str = "cheap") -> str | None:
    client = openai.OpenAI(base_url=running.openai_url, api_key=str(key["key"]), max_retries=0)
    reply = client.chat.completions.create(model=model, messages=HI)  # type: ignore[arg-type]
    return reply.choices[0].message.content


def refused(running: Running, key: dict[str, object]) -> openai.RateLimitError:
    with pytest.raises(openai.RateLimitError) as caught:
        ask(running, key)
    return caught.value


def until_answered(running: Running, key: dict[str, object], seconds: float = 20.0) -> None:
    """Ask until a slot is free (a request that ended gives its slot back as it ends)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            assert ask(running, key) == "the cheap answer"
            return
        except openai.RateLimitError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


async def _slots_taken(store: StateStore, key_id: str, seconds: float = 20.0) -> float:
    """The key's slots in use once none is (or what they are after `seconds`)."""
    try:
        for _ in range(int(seconds / 0.05)):
            if not await store.counter(f"{KEY_SLOTS}{key_id}"):
                break
            await asyncio.sleep(0.05)
        return await store.counter(f"{KEY_SLOTS}{key_id}")
    finally:
        await store.aclose()


def test_two_gateways_admit_the_keys_limit_between_them(
    gateways: tuple[Running, Running],
    upstream: FakeOpenAI,
    key: dict[str, object],
    shared: Shared,
) -> None:
    one, two = gateways
    with holding(one, upstream, key), holding(two, upstream, key):
        for running in (one, two):  # each gateway runs one: the key's two slots are taken
            error = refused(running, key)
            assert error.code == "concurrency_limit"
            assert (
                f"too many concurrent requests for this key (its limit is {LIMIT})" in error.message
            )
        claude = anthropic.Anthropic(base_url=two.url, api_key=str(key["key"]), max_retries=0)
        with pytest.raises(anthropic.RateLimitError) as caught:  # in Anthropic's shape there
            claude.messages.create(model="cheap", max_tokens=10, messages=HI)  # type: ignore[arg-type]
        assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    # Both clients hung up mid-stream: their slots come back as the gateways notice.
    assert asyncio.run(_slots_taken(shared.store(), str(key["id"]))) == 0
    with holding(one, upstream, key), holding(two, upstream, key):
        assert refused(two, key).code == "concurrency_limit"  # and were given back once each


def test_each_ending_gives_the_slot_back_before_the_caller_hears_of_it(
    gateways: tuple[Running, Running], upstream: FakeOpenAI, key: dict[str, object]
) -> None:
    one, two = gateways
    with holding(two, upstream, key):  # one slot left, taken and given back in turn
        for running in (one, two, one, two):  # an answer
            assert ask(running, key) == "the cheap answer"
        for running in (one, two):  # an upstream failure
            with pytest.raises(openai.InternalServerError):
                ask(running, key, model="broken")
        streamed = openai.OpenAI(
            base_url=two.openai_url, api_key=str(key["key"]), max_retries=0
        ).chat.completions.create(model="cheap", messages=HI, stream=True)  # type: ignore[arg-type]
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        assert ask(one, key) == "the cheap answer"  # a stream's end
        with holding(one, upstream, key):  # the second slot is free, and the only one
            assert refused(two, key).code == "concurrency_limit"


async def _held_by_a_killed_holder(store: StateStore, key_id: str) -> None:
    """Both of the key's slots taken under a lease nobody renews: its process was killed (5 s
    leaves the first refusal room on a loaded machine)."""
    claim = Claim(key=f"{KEY_SLOTS}{key_id}", amount=LIMIT, limit=LIMIT)
    assert await store.reserve_or_explain([claim], lease=Lease(id="killed", seconds=5.0)) is None
    await store.aclose()


def test_the_slots_of_a_killed_holder_come_back_when_its_lease_expires(
    gateways: tuple[Running, Running],
    upstream: FakeOpenAI,
    key: dict[str, object],
    shared: Shared,
) -> None:
    one, two = gateways
    asyncio.run(_held_by_a_killed_holder(shared.store(), str(key["id"])))
    assert refused(one, key).code == "concurrency_limit"
    # No request of either gateway holds a lease: the refusals sweep (at most every quarter
    # of `state.hold_lease`), and the expired lease gives its slots back.
    until_answered(two, key, seconds=60)
    until_answered(one, key, seconds=60)
    with holding(one, upstream, key), holding(two, upstream, key):  # both, and once
        assert refused(one, key).code == "concurrency_limit"


async def _admin(app: Gateway, body: dict[str, object]) -> dict[str, object]:
    """A key made through the admin API, in process."""
    sent: list[dict[str, object]] = []
    await _served(app, "/admin/keys", body, "admin-secret-123456", sent)
    assert sent[0]["status"] == 201, sent
    return orjson.loads(b"".join(m.get("body", b"") for m in sent[1:]))  # type: ignore[no-any-return,misc]


def _served(
    app: Gateway,
    path: str,
    body: dict[str, object],
    key: str,
    sent: list[dict[str, object]] | None = None,
) -> asyncio.Task[None]:
    """`app` serving one request in process, in a task of its own (as a server runs it); what
    it sends goes to `sent`. Its client never leaves."""
    asked = False

    async def receive() -> dict[str, object]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": orjson.dumps(body), "more_body": False}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, object]) -> None:
        if sent is not None:
            sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {key}".encode()),
        ],
        "client": ("127.0.0.1", 1),
    }
    return asyncio.ensure_future(app(scope, receive, send))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "gone", "messages": HI}),
        ("/v1/embeddings", {"model": "gone", "input": ["one"]}),
    ],
)
async def test_a_cancel_landing_while_the_slot_is_given_back_still_settles_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, body: dict[str, object]
) -> None:
    # The upstream cannot be reached, and a shutdown past drain_timeout cancels the request
    # while its slot's release is on its way to the store: the budget's hold must still be
    # settled, not left reserved (its lease renewed) for as long as the process runs.
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
providers:
  up: {{type: openai, base_url: "http://127.0.0.1:{free_port()}/v1", api_key: {UPSTREAM_KEY}}}
models:
  gone: {{provider: up, id: gpt-4o-mini-2024-07-18, price: {{input: 0.15, output: 0.6}}}}
embedders:
  gone: {{provider: up, id: text-embedding-3-small, price: {{input: 0.02}}}}
gateway: {{admin_key: admin-secret-123456}}
state: {{path: '{tmp_path / "state.db"}'}}
"""
    )
    app = create_app(config, workers=2)  # the key's slots counted in the shared SQLite file
    made = await _admin(app, {"name": "budgeted", "max_concurrency": 1, "budget": 5.0})
    holds: list[Hold] = []
    reserve, release = KeyLimits.reserve, LeaseKeeper.release
    on_the_way, answered = asyncio.Event(), asyncio.Event()

    async def reserved(self: KeyLimits, *args: Any, **kwargs: Any) -> list[Hold]:
        holds.extend(await reserve(self, *args, **kwargs))
        return holds

    async def slow_slot(self: LeaseKeeper, lease_id: str, changes: list[Any]) -> list[float]:
        if not changes:  # a key's slot (a budget's release changes its counters)
            on_the_way.set()
            await answered.wait()
        return await release(self, lease_id, changes)

    monkeypatch.setattr(KeyLimits, "reserve", reserved)
    monkeypatch.setattr(LeaseKeeper, "release", slow_slot)
    try:
        serving = _served(app, path, body, str(made["key"]))
        await asyncio.wait_for(on_the_way.wait(), 10)
        serving.cancel()
        answered.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(serving, 10)
        store = app.chat.key_limits.spend
        assert holds and holds[0].amount > 0
        assert await store.counter(holds[0].used_key) == await store.counter(holds[0].spent_key)
        assert not await store.counter(f"{KEY_SLOTS}{made['id']}")  # and the slot given back
    finally:
        await app.aclose()


async def test_a_cancel_landing_while_the_store_takes_a_slot_gives_it_back(
    shared: Shared, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client gone (or a deadline) while the store takes the key's slot: the store has taken
    # it, its answer not yet read. The slot must come back with the answer, not stay taken
    # (known to no one, its lease unrenewed) until the lease expires two minutes later.
    store = shared.store()
    limits = KeyLimits()
    limits.limits = limits.spend = store
    key = VirtualKey(id=f"k{uuid.uuid4().hex[:8]}", name="k", max_concurrency=1)
    slot = f"{KEY_SLOTS}{key.id}"
    taken, answer = asyncio.Event(), asyncio.Event()
    reserve = store.reserve_or_explain

    async def answered_late(claims: Any, *, lease: Lease | None = None) -> Any:
        outcome = await reserve(claims, lease=lease)
        taken.set()
        await answer.wait()  # the answer on its way back
        return outcome

    monkeypatch.setattr(store, "reserve_or_explain", answered_late)
    try:
        admitting = asyncio.create_task(limits.admit(key, a_call()))
        await asyncio.wait_for(taken.wait(), 10)
        assert await store.counter(slot) == 1
        admitting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(admitting, 10)  # at once: the answer is not waited for
        answer.set()
        for _ in range(200):  # given back as the answer comes (10 s for a loaded machine)
            if not await store.counter(slot):
                break
            await asyncio.sleep(0.05)
        assert await store.counter(slot) == 0
        assert not limits.book.leases._live  # and not renewed
        monkeypatch.undo()
        call = a_call()
        await limits.admit(key, call)  # the key's one slot is free
        await limits.release(key, call)
    finally:
        await limits.book.leases.aclose()
        await store.aclose()
