"""The shared state store (Redis, PostgreSQL) failing under a gateway, seen by the official
OpenAI SDK: cut between requests and during one, slower than `state.timeout`, down a while and
back. Each replica reaches the real server through a relay of its own, so only its connections
are cut (others' tests share the servers). With `fail_closed` a client gets a 503 naming the
store (never its password) and the answer of a call already made; with `local` it is served;
either way the store takes every cost once it is back, with no restart, and what a replica
stopped while cut off counted alone is handed to it by the next replica to start."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import openai
import pytest
import redis
from tests.fakes.tcp_relay import TcpRelay
from tests.gateway.conftest import SYSTEMS, Running, start_gateway
from tests.state.conftest import POSTGRES_URL, REDIS_URL, unique_prefix

from modelyard.state.postgres import PostgresStore

SECRET = "hunter2-secret"
RETRY = 0.2
"""`state.retry_interval` of these tests: how soon a replica tries the store again."""
BACKENDS = [
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("postgres", marks=pytest.mark.postgres),
]


@dataclass
class Store:
    """One test's keys (Redis) or tables (PostgreSQL) on the real server, read directly."""

    backend: str
    name: str

    def url(self, relay: TcpRelay) -> str:
        """The server's URL through `relay`, with a password the errors must not show."""
        if self.backend == "redis":
            return f"redis://:{SECRET}@127.0.0.1:{relay.port}/0"
        return f"postgresql://postgres:{SECRET}@127.0.0.1:{relay.port}/test"

    def counters(self, kind: str) -> float:
        """The sum of the budget counters of `kind` (`budget`: spent and reserved; `spent`)."""
        if self.backend == "redis":
            client = redis.Redis.from_url(REDIS_URL)
            try:
                keys = client.scan_iter(f"{self.name}c:{kind}:*")
                return sum(float(client.get(key) or 0) for key in keys)
            finally:
                client.close()
        return asyncio.run(self._pg_sum(kind))

    async def _pg_sum(self, kind: str) -> float:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            query = f"SELECT coalesce(sum(value), 0) FROM {self.name}counters WHERE key LIKE $1"
            return float(await conn.fetchval(query, f"{kind}:%"))
        finally:
            await conn.close()

    def settled(self, expected: float, seconds: float = 10.0) -> bool:
        """Whether the store holds `expected` spent, and nothing more reserved, within
        `seconds` (a settlement put off by an outage is sent in the background)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            spent, held = self.counters("spent"), self.counters("budget")
            if spent == pytest.approx(expected) and held == pytest.approx(expected):
                return True
            time.sleep(0.05)
        return False

    def drop(self) -> None:
        if self.backend == "redis":
            client = redis.Redis.from_url(REDIS_URL)
            for key in client.scan_iter(f"{self.name}*"):
                client.delete(key)
            client.close()
            return

        async def drop() -> None:
            tables = PostgresStore(POSTGRES_URL, table_prefix=self.name)
            await tables.drop_tables()
            await tables.aclose()

        asyncio.run(drop())


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    backend = request.param
    name = unique_prefix() if backend == "redis" else f"t{uuid.uuid4().hex[:10]}_"
    made = Store(backend, name)
    yield made
    made.drop()


@dataclass
class Replica:
    """A gateway whose state store is reached through a relay of its own."""

    running: Running
    relay: TcpRelay
    stop: Callable[[], None]
    """Stop serving (uvicorn's shutdown, as on SIGTERM: the gateway closes its stores)."""

    def ask(self, text: str = "ping", **options: int) -> str | openai.APIStatusError:
        """The answer to `text` through the OpenAI SDK, or the error the client got."""
        client = openai.OpenAI(base_url=self.running.openai_url, api_key="x", max_retries=0)
        try:
            reply = client.chat.completions.create(
                model="cheap", messages=[{"role": "user", "content": text}], **options
            )
        except openai.APIStatusError as exc:
            return exc
        return reply.choices[0].message.content or ""


@pytest.fixture
def replica(store: Store, tmp_path: Path) -> Iterator[Callable[..., Replica]]:
    """Start a replica on `store` with the given `on_unavailable` (and state options)."""
    started: list[tuple[Callable[[], None], TcpRelay | None]] = []
    target = 6379 if store.backend == "redis" else 5432

    def start(
        on_unavailable: str,
        *,
        timeout: float = 5.0,
        limit: float = 1.0,
        extra: str = "",
        folder: Path | None = None,
        relay: TcpRelay | None = None,
    ) -> Replica:
        """`folder`: the config's, shared with replicas started before (its state folder too).
        `relay`: one a replica before reached the store through (listening again), so the
        config names the store at the same address, as a successor's on the same host does."""
        own = relay is None
        if relay is None:
            relay = TcpRelay("127.0.0.1", target)
            relay.restore()
        if folder is None:
            folder = tmp_path / f"replica-{len(started)}"
            folder.mkdir()
        config = folder / "config.yaml"
        config.write_text(
            SYSTEMS + f"state: {{backend: {store.backend}, url: '{store.url(relay)}', "
            f"prefix: '{store.name}', on_unavailable: {on_unavailable}, "
            f"retry_interval: {RETRY}, timeout: {timeout}}}\n"
            f"budgets:\n  - {{name: day, scope: total, limit: {limit}}}\n"
            + (extra or "ledger: {enabled: false}\n")
            + "alerts: {anomaly: null}\n",
            encoding="utf-8",
        )
        running, stop = start_gateway(config)
        started.append((stop, relay if own else None))
        return Replica(running, relay, stop)

    yield start
    for stop, _ in started:
        stop()
    for _, closing in started:  # once every replica has stopped: a relay may serve several
        if closing is not None:
            closing.close()


def refused_naming_the_store(answer: object, store: Store) -> None:
    """`answer` is the 503 of a store that cannot be reached, naming it without the password."""
    assert isinstance(answer, openai.APIStatusError), answer
    assert answer.status_code == 503
    error = answer.body if isinstance(answer.body, dict) else {}
    assert error.get("code") == "state_unavailable", answer.body
    message = str(error.get("message"))
    where = "redis://***@127.0.0.1:" if store.backend == "redis" else "state.url (postgresql://"
    assert where in message and "fail_closed" in message, message
    assert SECRET not in str(answer.body) and SECRET not in str(answer.response.headers)


def back(replica: Replica) -> None:
    """Let the replica reach its store again, and wait out its retry interval."""
    replica.relay.restore()
    time.sleep(RETRY * 1.5)


ONE = 7e-06
"""What a "ping" answered by the cheap model costs."""


def test_fail_closed_refuses_while_the_store_is_cut_and_serves_again_once_back(
    replica: Callable[..., Replica], store: Store
) -> None:
    gateway = replica("fail_closed")
    assert gateway.ask() == "pong"
    gateway.relay.cut()
    for _ in range(3):
        refused_naming_the_store(gateway.ask(), store)
    back(gateway)
    assert gateway.ask() == "pong"
    assert store.settled(2 * ONE), "the refused requests were charged, or the served not"


@pytest.mark.parametrize("mode", ["fail_closed", "local"])
def test_a_store_cut_during_a_call_keeps_its_answer_and_settles_it_once_back(
    replica: Callable[..., Replica], store: Store, mode: str
) -> None:
    gateway = replica(mode)
    assert gateway.ask() == "pong"
    answers: list[object] = []
    call = threading.Thread(target=lambda: answers.append(gateway.ask("slow")))
    call.start()
    deadline = time.monotonic() + 5
    while store.counters("budget") <= ONE * 1.5:  # until the call is out, its worst case held
        assert time.monotonic() < deadline, "the slow call never reserved"
        time.sleep(0.01)
    gateway.relay.cut()
    call.join()
    assert answers == ["late"]
    after = gateway.ask()
    if mode == "fail_closed":
        refused_naming_the_store(after, store)
    else:
        assert after == "pong"
    back(gateway)
    assert gateway.ask() == "pong"
    served = 4 if mode == "local" else 3
    assert store.settled(served * ONE), "a settlement was lost, or counted twice"


def test_local_serves_through_an_outage_and_hands_what_it_counted_to_the_store(
    replica: Callable[..., Replica], store: Store
) -> None:
    gateway = replica("local")
    assert gateway.ask() == "pong"
    gateway.relay.cut()
    for _ in range(5):
        assert gateway.ask() == "pong"
        time.sleep(0.2)  # an outage of a second, through several retries that fail
    back(gateway)
    assert gateway.ask() == "pong"
    assert store.settled(7 * ONE)


@pytest.mark.parametrize("mode", ["fail_closed", "local"])
def test_a_store_slower_than_its_timeout_is_an_outage_after_the_timeout(
    replica: Callable[..., Replica], store: Store, mode: str
) -> None:
    timeout = 2.0
    gateway = replica(mode, timeout=timeout)
    assert gateway.ask() == "pong"
    started = time.monotonic()
    assert gateway.ask() == "pong"
    served = time.monotonic() - started  # a request with the store at hand, on this machine now
    gateway.relay.delay(3 * timeout)
    started = time.monotonic()
    first = gateway.ask()
    waited = time.monotonic() - started
    if mode == "fail_closed":
        refused_naming_the_store(first, store)
        assert "no answer within 2 s" in str(first) or "TimeoutError" in str(first)
    else:
        assert first == "pong"
    # The store's timeout, not the link's latency nor twice the timeout (a PostgreSQL
    # connection given back waited as long again for the server to cancel the query). What
    # the request itself takes is measured, so a loaded machine leaves the bound its meaning.
    assert waited < served + 1.5 * timeout, (
        f"the client waited {waited:.2f} s on a store whose timeout is {timeout:g} s"
        f" (a request served at once took {served:.2f} s)"
    )
    gateway.relay.delay(0)


SHORT = {"max_tokens": 2}
"""A ping whose worst case is near what it costs (at most 2 tokens out): a budget's cap
then admits about as many as it can pay for, so local counting can show an overspend."""
CAP = 0.0001
"""A budget a few pings fit under: one costs ONE, and reserves up to 1.1e-05 (its 2 tokens)."""


def budget_refused(answer: object) -> bool:
    return isinstance(answer, openai.APIStatusError) and answer.status_code == 429


def served_until_refused(replica: Replica) -> int:
    """How many pings `replica` answers before its budget refuses one."""
    for served in range(100):
        answer = replica.ask(**SHORT)
        if budget_refused(answer):
            return served
        assert answer == "pong", answer
    raise AssertionError("the budget never refused")


def test_two_replicas_fail_closed_never_pass_the_cap_while_one_is_cut_off(
    replica: Callable[..., Replica], store: Store
) -> None:
    one, other = replica("fail_closed", limit=CAP), replica("fail_closed", limit=CAP)
    assert one.ask(**SHORT) == other.ask(**SHORT) == "pong"
    one.relay.cut()
    refused_naming_the_store(one.ask(**SHORT), store)
    served = served_until_refused(other)
    back(one)
    assert budget_refused(one.ask(**SHORT)), "the cut-off replica forgot what the other spent"
    assert store.settled((served + 2) * ONE)
    assert store.counters("spent") <= CAP + 1e-12


def test_two_replicas_counting_alone_overspend_at_most_a_cap_each_and_lose_none_of_it(
    replica: Callable[..., Replica], store: Store
) -> None:
    """Under `local` each replica enforces the cap alone (docs/operations.md): two cut off
    together may spend it twice over, no more; once back, the store holds every cost and both
    refuse."""
    one, other = replica("local", limit=CAP), replica("local", limit=CAP)
    assert one.ask(**SHORT) == "pong"
    one.relay.cut()
    other.relay.cut()
    served = [served_until_refused(one), served_until_refused(other)]
    assert all(n * ONE <= CAP + 1e-12 for n in served), served
    back(one)
    back(other)
    assert store.settled((sum(served) + 1) * ONE)
    assert store.counters("spent") <= 2 * CAP + ONE
    assert budget_refused(one.ask(**SHORT)) and budget_refused(other.ask(**SHORT))


def spooled(folder: Path) -> list[Path]:
    """The spool files in the state folder of `folder`'s config.yaml (`state.handover`)."""
    return sorted((folder / ".modelyard" / "config.yaml").glob("state-handover-*"))


def stopped_while_cut_off(replica: Callable[..., Replica], served: int) -> Replica:
    """Start a replica (`local`), serve a ping, cut it off, serve `served` pings alone, and stop
    it still cut off; it, its config's folder holding the spool file it wrote."""
    gateway = replica("local")
    assert gateway.ask() == "pong"
    gateway.relay.cut()
    for _ in range(served):
        assert gateway.ask() == "pong"
    gateway.stop()
    return gateway


def test_a_replica_stopped_while_cut_off_leaves_its_spend_to_the_next_one_to_start(
    replica: Callable[..., Replica], store: Store
) -> None:
    stopped = stopped_while_cut_off(replica, served=3)
    folder = stopped.running.config.parent
    assert store.counters("spent") == pytest.approx(ONE)
    [left] = spooled(folder)
    assert left.stat().st_mode & 0o777 == 0o600
    stopped.relay.restore()  # the store, at the address the stopped replica's config names
    successor = replica("local", folder=folder, relay=stopped.relay)
    assert successor.ask() == "pong"
    assert store.settled(5 * ONE), "the stopped replica's spend was lost, or counted twice"
    assert spooled(folder) == []


def test_two_replicas_starting_together_hand_a_stopped_ones_spend_over_once(
    replica: Callable[..., Replica], store: Store
) -> None:
    stopped = stopped_while_cut_off(replica, served=4)
    folder, relay = stopped.running.config.parent, stopped.relay
    [left] = spooled(folder)
    copy = left.read_bytes()
    relay.restore()
    one, other = (replica("local", folder=folder, relay=relay) for _ in range(2))
    answers: list[object] = []
    asks = [threading.Thread(target=lambda r=r: answers.append(r.ask())) for r in (one, other)]
    for ask in asks:
        ask.start()
    for ask in asks:
        ask.join()
    assert answers == ["pong", "pong"]
    assert store.settled(7 * ONE), "the stopped replica's spend was lost, or counted twice"
    # A replica that crashed after sending, before deleting the file: its successor sends it
    # again, and the store applies it once.
    left.write_bytes(copy)
    assert replica("local", folder=folder, relay=relay).ask() == "pong"
    assert store.settled(8 * ONE), "a spool sent again was counted twice"
    assert spooled(folder) == []


def test_a_corrupt_spool_file_is_set_aside_and_the_replica_serves(
    replica: Callable[..., Replica], store: Store, tmp_path: Path
) -> None:
    state = tmp_path / "shared" / ".modelyard" / "config.yaml"
    state.mkdir(parents=True)
    (state / "state-handover-1-0badf00d.json").write_text('{"version": 1, "mov', encoding="utf-8")
    gateway = replica("local", folder=tmp_path / "shared")
    assert gateway.ask() == "pong"
    assert store.settled(ONE)
    assert [p.name for p in spooled(tmp_path / "shared")] == [
        "state-handover-1-0badf00d.json.corrupt"
    ]


@pytest.mark.postgres
@pytest.mark.parametrize("store", ["redis"], indirect=True)
def test_ledger_rows_and_request_records_written_during_an_outage_land_once(
    replica: Callable[..., Replica], store: Store, tmp_path: Path
) -> None:
    """The ledger and the request log in PostgreSQL, cut off with the state store: what the
    replica served meanwhile (`local`) waits in its outboxes and is written once it is back."""
    tables = f"t{uuid.uuid4().hex[:10]}_"
    relay = TcpRelay("127.0.0.1", 5432)
    relay.restore()
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:{relay.port}/test"
    gateway = replica(
        "local",
        extra=f"ledger: {{backend: postgres, url: '{url}', table_prefix: {tables}, "
        f"flush_interval: 0.05}}\n"
        f"gateway: {{request_log_url: '{url}', request_log_table_prefix: {tables}}}\n",
    )
    try:
        assert gateway.ask() == "pong"
        relay.cut()
        gateway.relay.cut()
        for _ in range(5):
            assert gateway.ask() == "pong"
        time.sleep(1.0)  # several flushes of each fail
        relay.restore()
        back(gateway)
        assert gateway.ask() == "pong"
        assert store.settled(7 * ONE)
        deadline = time.monotonic() + 10
        while (rows := asyncio.run(written(tables))) != (7, 7, 7, 7):
            assert time.monotonic() < deadline, f"rows, distinct requests: {rows}"
            time.sleep(0.1)
    finally:
        relay.close()
        asyncio.run(drop_tables(tables))


async def written(tables: str) -> tuple[int, ...]:
    """Ledger rows, the requests they name, request records, and their distinct ids."""
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        counts = []
        for query in (
            f"SELECT count(*), count(DISTINCT request_id) FROM {tables}spend",
            f"SELECT count(*), count(DISTINCT id) FROM {tables}requests",
        ):
            try:
                counts += list(await conn.fetchrow(query))
            except asyncpg.UndefinedTableError:
                counts += [0, 0]
        return tuple(counts)
    finally:
        await conn.close()


async def drop_tables(tables: str) -> None:
    from modelyard.cost.ledger_postgres import PostgresLedgerFile
    from modelyard.observability.request_log_postgres import PostgresRequestLog

    for kind in (PostgresLedgerFile, PostgresRequestLog):
        made = kind(POSTGRES_URL, table_prefix=tables)
        await made.drop_tables()
        await made.aclose()
