"""What OpenTelemetry tracing costs per request, with instant fake models.

    .venv/bin/python bench/tracing_overhead.py             # about 30 s
    .venv/bin/python bench/tracing_overhead.py --quick     # about 8 s

One system, a fallback whose first member fails and whose second answers: three spans a
request (the system and both attempts). The same requests run, in alternating rounds, with no
`tracing:` section, with `exporter: global` and no SDK set up (OpenTelemetry's no-op tracer),
and with `exporter: otlp` to a collector stand-in on 127.0.0.1 that answers every export with
200, keeping every trace or one in ten (`sample_ratio: 0.1`). CPU time is the whole process's
(`time.process_time`), so the SDK's export thread counts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import modelyard

SYSTEM = """
models:
  flaky: {local: {type: fake, default: {error: unavailable}}}
  steady:
    local: {type: fake, default: "the answer"}
    price: {input: 1.0, output: 1.0}
systems:
  main: {type: fallback, chain: [flaky, steady]}
"""


class _Sink(BaseHTTPRequestHandler):
    """Reads an export and answers 200, as a collector that keeps up would."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


async def _round(config: Path, requests: int) -> tuple[float, float]:
    """Microseconds of wall and CPU time per request, the yard's set-up and close excluded."""
    async with modelyard.load(config) as yard:
        for _ in range(50):  # warm-up
            await yard.complete("main", "hello")
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(requests):
            await yard.complete("main", "hello")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall / requests * 1e6, cpu / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    requests, rounds = (1_000, 3) if args.quick else (3_000, 5)
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{sink.server_port}/v1/traces"
    folder = Path(tempfile.mkdtemp())
    variants = {
        "no tracing: section": SYSTEM,
        "exporter: global, no SDK (no-op)": SYSTEM + "tracing: {exporter: global}\n",
        "exporter: otlp, 3 spans a request": SYSTEM + f"tracing: {{endpoint: {endpoint}}}\n",
        "exporter: otlp, sample_ratio: 0.1": SYSTEM
        + f"tracing: {{endpoint: {endpoint}, sample_ratio: 0.1}}\n",
    }
    configs = {}
    for number, (name, text) in enumerate(variants.items()):
        configs[name] = folder / f"config{number}.yaml"
        configs[name].write_text(text + "state: {backend: memory}\nledger: {enabled: false}\n")
    found: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(rounds):  # alternating, so load on a shared host falls on every variant
        for name, config in configs.items():
            found[name].append(asyncio.run(_round(config, requests)))
    sink.shutdown()
    base_cpu = statistics.median(c for _, c in found["no tracing: section"])
    print(f"{requests:,} requests x {rounds} rounds; medians per request")
    print(f"{'variant':36s} {'wall':>9s} {'CPU':>9s} {'CPU vs none':>12s}")
    for name, runs in found.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"{name:36s} {wall:7.1f}µs {cpu:7.1f}µs {cpu / base_cpu:11.2f}x")


if __name__ == "__main__":
    main()
