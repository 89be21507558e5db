"""Chaos check of shared mode: two `modelyard serve` replicas sharing Redis (state, cache) and
PostgreSQL (ledger, request log, keys) through TCP relays, fake OpenAI upstreams, traffic from
the official `openai` SDK (streamed and not), one fault injected mid-load, then a reconciliation
of what the clients were answered against the ledger, the budgets, the request log and the
upstreams' own count.

    PYTHONPATH=src:. python bench/chaos_shared.py reload|cut|kill|upstream [--seconds 40]

Needs Redis at 127.0.0.1:6379 and PostgreSQL at 127.0.0.1:5432 (db `test`); uses key and table
prefixes of its own and removes them afterwards (--keep leaves them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx2
import openai
import redis
from aiohttp import web
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.server import Fault, free_port
from tests.fakes.tcp_relay import TcpRelay

ADMIN = "admin-chaosqa-0123456789"
PRICES = {"gpt-a": (100.0, 200.0), "gpt-b": (300.0, 600.0)}
"""USD per million input and output tokens."""
REDIS = ("127.0.0.1", 6379)
POSTGRES = ("127.0.0.1", 5432)


class CountingOpenAI(FakeOpenAI):
    """A fake OpenAI upstream that notes the usage of every answer it served in full, by the
    request's marker (the first word of its last user message)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.served: list[tuple[str, int, int]] = []

    def answer(self, kind: str, request: web.Request, body: Any) -> dict[str, Any]:
        out = super().answer(kind, request, body)
        usage = out.get("usage") or {}
        self.served.append(
            (_marker(body), usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
        )
        return out

    def events(self, kind: str, request: web.Request, body: Any) -> tuple[list[bytes], list[bytes]]:
        content, final = super().events(kind, request, body)
        for frame in final:
            text = frame.decode().removeprefix("data: ").strip()
            if text.startswith("{") and '"usage":{' in text.replace(" ", ""):
                usage = json.loads(text)["usage"]
                self.served.append(
                    (_marker(body), usage["prompt_tokens"], usage["completion_tokens"])
                )
        return content, final


def _marker(body: Any) -> str:
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            return str(message.get("content", "")).split(" ")[0]
    return ""


def _real(row: dict[str, Any]) -> bool:
    """A ledger row of a call the upstream answered (not a cache hit, not an estimate)."""
    return not row["cached"] and not row["tokens_estimated"]


def config_text(
    a: FakeOpenAI, b: FakeOpenAI, redis_port: int, pg_port: int, tag: str, unavailable: str
) -> str:
    pg = f"postgresql://postgres@127.0.0.1:{pg_port}/test"
    return f"""\
providers:
  up_a: {{type: openai, base_url: "{a.url}/v1", api_key: sk-a-0123456789,
          timeouts: {{total: 4, first_token: 4, stall: 4}}}}
  up_b: {{type: openai, base_url: "{b.url}/v1", api_key: sk-b-0123456789,
          timeouts: {{total: 4, first_token: 4, stall: 4}}}}
models:
  gpt-a: {{provider: up_a, id: gpt-4o-mini, price: {{input: 100, output: 200}}}}
  gpt-b: {{provider: up_b, id: gpt-4o, price: {{input: 300, output: 600}}}}
systems:
  chat:
    type: fallback
    chain: [gpt-a, gpt-b]
state:
  backend: redis
  url: redis://127.0.0.1:{redis_port}/0
  prefix: "chaosqa-{tag}:"
  hold_lease: 10
  retry_interval: 1
  on_unavailable: {unavailable}
budgets:
  - {{name: total, scope: total, window: month, limit: 1000}}
  - {{name: chat-day, scope: system, selector: chat, window: day, limit: 500}}
cache: {{backend: redis, url: "redis://127.0.0.1:{redis_port}/0", ttl: 600}}
ledger: {{backend: postgres, url: "{pg}", table_prefix: cq{tag}_, flush_interval: 0.5}}
gateway:
  admin_key: {ADMIN}
  keys_url: "{pg}"
  keys_table_prefix: cq{tag}_
  request_log_url: "{pg}"
  request_log_table_prefix: cq{tag}_
  drain_timeout: 5
"""


@dataclass
class Replica:
    """One `modelyard serve` process."""

    config: Path
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
        out = self.log.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelyard",
                "serve",
                str(self.config),
                "--port",
                str(self.port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )

    async def ready(self) -> None:
        async with httpx2.AsyncClient() as client:
            for _ in range(300):
                with contextlib.suppress(httpx2.HTTPError):
                    if (await client.get(self.url + "/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"replica on {self.port} did not start; see {self.log}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(30)


@dataclass
class Sent:
    """One client request and what the client saw."""

    marker: str
    key: str
    replica: int
    stream: bool
    sent_at: float
    status: int | None = None
    """HTTP status; None when no answer came (connection refused or cut)."""
    request_id: str | None = None
    code: str | None = None
    usage: tuple[int, int] | None = None
    cost_header: float | None = None
    text: str = ""
    error: str | None = None
    done_at: float = 0.0


@dataclass
class Run:
    """Everything a scenario's run set up."""

    tag: str
    workdir: Path
    a: CountingOpenAI
    b: CountingOpenAI
    redis_relay: TcpRelay
    pg_relay: TcpRelay
    replicas: list[Replica]
    keys: dict[str, str] = field(default_factory=dict)
    """name -> secret"""
    key_ids: dict[str, str] = field(default_factory=dict)
    sent: list[Sent] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)

    def note(self, what: str) -> None:
        self.events.append((time.monotonic(), what))
        print(f"[{time.strftime('%H:%M:%S')}] {what}", flush=True)


KEYS = {
    "alpha": {"rpm": 600, "budget": 50},
    "hot": {"rpm": 20},
    "tight": {"budget": 0.15},
}


async def make_keys(run: Run) -> None:
    async with httpx2.AsyncClient(headers={"authorization": f"Bearer {ADMIN}"}) as client:
        for name, limits in KEYS.items():
            reply = await client.post(
                run.replicas[0].url + "/admin/keys", json={"name": name, **limits}
            )
            reply.raise_for_status()
            run.keys[name] = reply.json()["key"]
            run.key_ids[name] = reply.json()["id"]


async def one_request(run: Run, n: int, key: str, replica: int, stream: bool) -> None:
    repeat = n % 10 == 0  # a repeated prompt: the cache should answer it after the first
    marker = f"rep-{key}-{n % 3}" if repeat else f"m{run.tag}-{n}"
    sent = Sent(marker=marker, key=key, replica=replica, stream=stream, sent_at=time.monotonic())
    run.sent.append(sent)
    client = openai.AsyncOpenAI(
        base_url=run.replicas[replica].url + "/v1",
        api_key=run.keys[key],
        max_retries=0,
        timeout=30,
    )
    words = " ".join(random.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(8))
    messages = [
        {"role": "user", "content": f"{marker} please answer {words if not repeat else ''}"}
    ]
    try:
        if stream:
            async with client.chat.completions.with_streaming_response.create(
                model="chat",
                messages=messages,  # type: ignore[arg-type]
                max_tokens=40,
                stream=True,
                stream_options={"include_usage": True},
            ) as response:
                sent.status = response.status_code
                sent.request_id = response.headers.get("x-request-id")
                async for chunk in await response.parse():
                    if chunk.choices and chunk.choices[0].delta.content:
                        sent.text += chunk.choices[0].delta.content
                    if chunk.usage is not None:
                        sent.usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        else:
            raw = await client.chat.completions.with_raw_response.create(
                model="chat",
                messages=messages,  # type: ignore[arg-type]
                max_tokens=40,
            )
            sent.status = raw.status_code
            sent.request_id = raw.headers.get("x-request-id")
            sent.cost_header = float(raw.headers.get("x-modelyard-cost") or 0)
            answer = raw.parse()
            sent.text = answer.choices[0].message.content or ""
            if answer.usage is not None:
                sent.usage = (answer.usage.prompt_tokens, answer.usage.completion_tokens)
    except openai.APIStatusError as exc:
        sent.status = exc.status_code
        sent.request_id = exc.response.headers.get("x-request-id")
        body = exc.body if isinstance(exc.body, dict) else {}
        sent.code = str(body.get("code") or (body.get("error") or {}).get("code") or "")
        sent.error = str(exc)[:200]
    except (openai.APIConnectionError, httpx2.HTTPError) as exc:
        sent.error = f"{type(exc).__name__}: {exc}"[:200]
        if sent.status is not None:
            sent.error = "stream cut: " + sent.error
    finally:
        sent.done_at = time.monotonic()
        await client.close()


async def traffic(run: Run, seconds: float, rate: float) -> None:
    """Open loop: `rate` requests a second, alternating replicas, a fifth to `hot`, half
    streamed."""
    tasks = []
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        key = "hot" if n % 5 == 0 else "tight" if n % 5 == 1 else "alpha"
        tasks.append(asyncio.create_task(one_request(run, n, key, n % 2, stream=n % 4 >= 2)))
        n += 1
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks)


async def chaos(run: Run, scenario: str, at: float) -> None:
    await asyncio.sleep(at)
    loop = asyncio.get_running_loop()
    if scenario == "reload":
        text = run.replicas[0].config.read_text()
        run.replicas[0].config.write_text(text.replace("total: 4,", "total: 5,"))
        async with httpx2.AsyncClient() as client:
            reply = await client.post(
                run.replicas[0].url + "/admin/reload",
                headers={"authorization": f"Bearer {ADMIN}"},
            )
        run.note(f"reloaded replica 0: {reply.status_code} {reply.text[:200]}")
    elif scenario == "cut":
        await loop.run_in_executor(None, run.redis_relay.cut)
        await loop.run_in_executor(None, run.pg_relay.cut)
        run.note("cut Redis and PostgreSQL")
        await asyncio.sleep(15)
        await loop.run_in_executor(None, run.redis_relay.restore)
        await loop.run_in_executor(None, run.pg_relay.restore)
        run.note("restored Redis and PostgreSQL")
    elif scenario == "kill":
        await loop.run_in_executor(None, run.replicas[1].kill)
        run.note("killed replica 1 (SIGKILL)")
        await asyncio.sleep(3)
        run.replicas[1].start()
        await run.replicas[1].ready()
        run.note("replica 1 serving again")
    elif scenario == "stall":  # a partition: connections stay open, nothing passes
        run.redis_relay.stall()
        run.pg_relay.stall()
        run.note("stalled Redis and PostgreSQL")
        await asyncio.sleep(15)
        run.redis_relay.flow()
        run.pg_relay.flow()
        run.note("Redis and PostgreSQL flow again")
    elif scenario == "pgkill":
        await loop.run_in_executor(None, run.pg_relay.cut)
        run.note("cut PostgreSQL")
        await asyncio.sleep(8)
        await loop.run_in_executor(None, run.replicas[1].kill)
        run.note("killed replica 1 (SIGKILL) while PostgreSQL is cut")
        await asyncio.sleep(4)
        await loop.run_in_executor(None, run.pg_relay.restore)
        run.note("restored PostgreSQL")
        run.replicas[1].start()
        await run.replicas[1].ready()
        run.note("replica 1 serving again")
    elif scenario == "upstream":
        run.a.always(Fault(status=500))
        run.note("upstream A answers 500")
        await asyncio.sleep(6)
        run.a.always(Fault(status=429, headers={"retry-after": "1"}))
        run.note("upstream A answers 429")
        await asyncio.sleep(6)
        run.a.always(Fault(hang=True))
        run.note("upstream A hangs")
        await asyncio.sleep(8)
        run.a.always(run.b.standing)
        run.note("upstream A healthy")


async def metrics(run: Run) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    async with httpx2.AsyncClient() as client:
        for i, replica in enumerate(run.replicas):
            text = (await client.get(replica.url + "/metrics")).text
            sums: dict[str, float] = defaultdict(float)
            for line in text.splitlines():
                if line.startswith("#") or not line.startswith("modelyard_"):
                    continue
                name = line.split("{")[0].split(" ")[0]
                if name.endswith(("_created", "_bucket")):
                    continue
                sums[name] += float(line.rsplit(" ", 1)[1])
                if name == "modelyard_requests_total":
                    status = line.split('status="')[1].split('"')[0]
                    sums[f"requests_total[{status}]"] += float(line.rsplit(" ", 1)[1])
            out[i] = dict(sums)
    return out


async def reconcile(run: Run) -> dict[str, Any]:
    problems_cost: list[str] = []
    pg = await asyncpg.connect(f"postgresql://postgres@{POSTGRES[0]}:{POSTGRES[1]}/test")
    p = f"cq{run.tag}_"
    spend = [dict(r) for r in await pg.fetch(f"SELECT * FROM {p}spend")]
    logged = {r["id"]: dict(r) for r in await pg.fetch(f"SELECT * FROM {p}requests")}
    await pg.close()
    store = redis.Redis(*REDIS)
    counters = {
        k.decode().removeprefix(f"chaosqa-{run.tag}:c:"): float(store.get(k) or 0)
        for k in store.scan_iter(f"chaosqa-{run.tag}:c:*")
    }
    leases = store.hlen(f"chaosqa-{run.tag}:leases:held")

    by_request: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in spend:
        by_request[row["request_id"]].append(row)
        if not row["cached"] and row["model"] in PRICES:
            price_in, price_out = PRICES[row["model"]]
            expected = (row["input_tokens"] * price_in + row["output_tokens"] * price_out) / 1e6
            if abs(expected - row["cost"]) > 1e-9:
                problems_cost.append(f"{row['request_id']}: cost {row['cost']} != {expected}")
    problems: list[str] = problems_cost
    answered = [s for s in run.sent if s.status == 200 and s.error is None]
    for s in answered:
        billed = [r for r in by_request.get(s.request_id or "", []) if r["answered"]]
        if len(billed) != 1:
            problems.append(f"answered {s.request_id} ({s.marker}): {len(billed)} answered rows")
        elif s.usage is not None and not billed[0]["cached"]:
            tokens = (billed[0]["input_tokens"], billed[0]["output_tokens"])
            if tokens != s.usage:
                problems.append(f"{s.request_id}: ledger tokens {tokens} != client's {s.usage}")
        if s.request_id not in logged:
            problems.append(f"answered {s.request_id} ({s.marker}) missing from the request log")
        elif logged[s.request_id]["status"] != 200:
            problems.append(
                f"{s.request_id}: client got 200, log says {logged[s.request_id]['status']}"
            )
    for s in run.sent:
        if s.request_id and s.status and s.status != 200 and s.request_id not in logged:
            problems.append(f"refused {s.request_id} ({s.status} {s.code}) not in the request log")
    uids = Counter(r["uid"] for r in spend)
    dupes = [u for u, c in uids.items() if c > 1]
    if dupes:
        problems.append(f"{len(dupes)} duplicated ledger uids")
    pairs = Counter((r["request_id"], r["model"]) for r in spend)
    dup_pairs = [k for k, c in pairs.items() if c > 1]
    if dup_pairs:
        problems.append(f"{len(dup_pairs)} (request, model) pairs with several ledger rows")
    unknown = [rid for rid in by_request if rid not in logged]

    # Upstream truth: every answer an upstream served in full, by model.
    upstream_tokens = {
        "gpt-a": (sum(u[1] for u in run.a.served), sum(u[2] for u in run.a.served)),
        "gpt-b": (sum(u[1] for u in run.b.served), sum(u[2] for u in run.b.served)),
    }
    ledger_tokens = {
        m: (
            sum(r["input_tokens"] for r in spend if r["model"] == m and _real(r)),
            sum(r["output_tokens"] for r in spend if r["model"] == m and _real(r)),
        )
        for m in PRICES
    }
    ledger_cost = sum(r["cost"] for r in spend)
    upstream_cost = sum(
        (i * PRICES[m][0] + o * PRICES[m][1]) / 1e6 for m, (i, o) in upstream_tokens.items()
    )
    spent = {k: v for k, v in counters.items() if k.startswith("spent:")}
    used = {k: v for k, v in counters.items() if k.startswith("budget:")}
    key_ledger = {
        name: sum(r["cost"] for r in spend if r["key_id"] == kid)
        for name, kid in run.key_ids.items()
    }

    # rpm of `hot`: requests the gateway let through (not refused by the key's rpm), per 60 s.
    through = sorted(
        s.sent_at
        for s in run.sent
        if s.key == "hot"
        and s.status is not None
        and s.code not in ("key_rate_limited", "state_unavailable")
    )
    worst = max(
        (sum(1 for t in through if start <= t < start + 60) for start in through), default=0
    )
    statuses = Counter(
        f"{s.status}{'/' + s.code if s.code else ''}" if s.status else "no answer" for s in run.sent
    )
    return {
        "sent": len(run.sent),
        "statuses": dict(statuses),
        "answered": len(answered),
        "cut streams / lost": sum(1 for s in run.sent if s.error and s.status == 200),
        "ledger rows": len(spend),
        "ledger requests": len(by_request),
        "ledger rows not in request log": len(unknown),
        "request log rows": len(logged),
        "ledger cost": round(ledger_cost, 6),
        "upstream cost (full answers)": round(upstream_cost, 6),
        "ledger tokens (not cached or estimated)": ledger_tokens,
        "upstream tokens": upstream_tokens,
        "ledger estimated rows": sum(1 for r in spend if r["tokens_estimated"]),
        "ledger estimated cost": round(sum(r["cost"] for r in spend if r["tokens_estimated"]), 6),
        "counters spent": spent,
        "counters used": used,
        "leases held": leases,
        "ledger by key": key_ledger,
        "hot rpm worst 60s window (sent_at)": worst,
        "problems": problems[:40],
        "problem count": len(problems),
    }


async def main(
    scenario: str, seconds: float, rate: float, tag: str, *, slow: bool, unavailable: str
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"chaosqa-{scenario}-"))
    a = CountingOpenAI(api_key="sk-a-0123456789")
    b = CountingOpenAI(api_key="sk-b-0123456789")
    a.start()
    b.start()
    if slow:  # answers take ~1 s (streams 20 ms an event), so a fault finds requests in flight
        for fake in (a, b):
            fake.always(Fault(delay=0.3, chunk_delay=0.02))
    redis_relay, pg_relay = TcpRelay(*REDIS), TcpRelay(*POSTGRES)
    redis_relay.restore()
    pg_relay.restore()
    config = workdir / "gateway.yaml"
    config.write_text(config_text(a, b, redis_relay.port, pg_relay.port, tag, unavailable))
    replicas = [Replica(config, free_port(), workdir / f"replica{i}.log") for i in range(2)]
    run = Run(tag, workdir, a, b, redis_relay, pg_relay, replicas)
    print(f"workdir {workdir}, prefix chaosqa-{tag}: / cq{tag}_", flush=True)
    try:
        for replica in replicas:
            replica.start()
        for replica in replicas:
            await replica.ready()
        await make_keys(run)
        await asyncio.sleep(1.5)  # the second replica reads the new keys within a second
        run.note(f"traffic starts ({scenario})")
        await asyncio.gather(traffic(run, seconds, rate), chaos(run, scenario, seconds / 3))
        run.note("traffic ended; waiting for writers and lease sweeps")
        await asyncio.sleep(25)  # ledger and log batches; leases of a killed replica expire
        report = await reconcile(run)
        report["metrics"] = await metrics(run)
        report["scenario"] = scenario
        (workdir / "sent.json").write_text(
            json.dumps([s.__dict__ for s in run.sent], indent=1, default=str)
        )
        return report
    finally:
        for replica in replicas:
            if replica.process is not None and replica.process.poll() is None:
                replica.kill(signal.SIGTERM)
        redis_relay.close()
        pg_relay.close()
        a.stop()
        b.stop()


def cleanup(tag: str) -> None:
    store = redis.Redis(*REDIS)
    for key in store.scan_iter(f"chaosqa-{tag}:*"):
        store.delete(key)

    async def drop() -> None:
        pg = await asyncpg.connect(f"postgresql://postgres@{POSTGRES[0]}:{POSTGRES[1]}/test")
        tables = await pg.fetch(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE $1", f"cq{tag}_%"
        )
        for row in tables:
            await pg.execute(f'DROP TABLE IF EXISTS "{row["tablename"]}" CASCADE')
        await pg.close()

    asyncio.run(drop())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "scenario", choices=["none", "reload", "cut", "kill", "pgkill", "stall", "upstream"]
    )
    parser.add_argument("--seconds", type=float, default=45)
    parser.add_argument("--rate", type=float, default=6)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--slow", action="store_true")
    parser.add_argument("--local", action="store_true", help="state.on_unavailable: local")
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    try:
        report = asyncio.run(
            main(
                args.scenario,
                args.seconds,
                args.rate,
                tag,
                slow=args.slow,
                unavailable="local" if args.local else "fail_closed",
            )
        )
        print(json.dumps(report, indent=1, default=str))
    finally:
        if not args.keep:
            cleanup(tag)
