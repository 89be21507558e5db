"""Open-loop load at a fixed rate, recording each request's latency (the added-latency probe).

    python bench/gateway/openloop.py URL BODY.json [--key KEY] [--rate 200] [--seconds 15]
                                     [--warmup 3]

Requests start on a fixed schedule (request i at start + i/rate) whether or not earlier ones
have finished, so a slow server cannot slow the load down (no coordinated omission). Latency is
timed from just before the request is written to the end of its body. Prints one JSON object:
counts, errors and latency percentiles in milliseconds of the requests after the warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import uvloop


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; NaN for no values."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


async def _one(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    out: list[float] | None,
    errors: list[str],
) -> None:
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        errors.append(type(exc).__name__)
        return
    elapsed = (time.perf_counter() - started) * 1000
    if status != 200:
        errors.append(f"HTTP {status}")
    elif out is not None:
        out.append(elapsed)


async def run(
    url: str, body: bytes, key: str, rate: float, seconds: float, warmup: float
) -> dict[str, object]:
    """Send at `rate` for warmup + seconds; the latencies of the measured part."""
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    latencies: list[float] = []
    errors: list[str] = []
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        total = int((warmup + seconds) * rate)
        first_measured = int(warmup * rate)
        start = loop.time()
        late = 0.0
        for i in range(total):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late = max(late, -delay)
            out = latencies if i >= first_measured else None
            task = loop.create_task(_one(session, url, body, headers, out, errors))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sent_for = loop.time() - start
        if tasks:
            await asyncio.wait(tasks)
    latencies.sort()
    return {
        "rate": rate,
        "sent": total,
        "measured": len(latencies),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "achieved_rate": round(total / sent_for, 1) if sent_for else None,
        "max_send_lag_ms": round(late * 1000, 2),
        "p50_ms": round(percentile(latencies, 50), 3),
        "p90_ms": round(percentile(latencies, 90), 3),
        "p99_ms": round(percentile(latencies, 99), 3),
        "max_ms": round(latencies[-1], 3) if latencies else None,
        "mean_ms": round(sum(latencies) / len(latencies), 3) if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("body", type=Path, help="JSON file to POST")
    parser.add_argument("--key", default="sk-bench", help="sent as a Bearer token")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    args = parser.parse_args()
    result = uvloop.run(
        run(args.url, args.body.read_bytes(), args.key, args.rate, args.seconds, args.warmup)
    )
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
