"""The memory soak: the gateway's RSS across many requests at saturation (run.py --soak)."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import procs


class RssSampler:
    """Samples a process's RSS every `every` seconds in a thread, tagged with a request count."""

    def __init__(self, pid: int, every: float, count: Callable[[], int]) -> None:
        self.pid = pid
        self.every = every
        self.count = count
        self.samples: list[tuple[float, int, int]] = []
        """(seconds since start, requests so far, RSS bytes)"""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        elapsed = time.monotonic() - self._started
        self.samples.append((round(elapsed, 1), self.count(), procs.rss_bytes(self.pid)))

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()


def soak(
    url: str,
    body: Path,
    key: str,
    pid: int,
    *,
    script: Path,
    total: int = 1_000_000,
    warmup: int = 100_000,
    segment: float = 10.0,
    sample_every: float = 5.0,
    progress: Callable[[str], None] = print,
) -> dict[str, object]:
    """Drive `url` with wrk in `segment`-second runs until `total` requests have been answered,
    sampling `pid`'s RSS; growth is measured from the first sample after `warmup` requests."""
    done = 0
    errors = 0
    cpu_before = procs.cpu_seconds(pid)
    started = time.monotonic()
    with RssSampler(pid, sample_every, lambda: done) as sampler:
        while done < total:
            result = procs.wrk(url, body, key, seconds=segment, script=script)
            done += int(result["requests"])
            errors += int(result["errors"])
            progress(
                f"  soak: {done:,} requests, {result['rps']:,.0f} req/s, "
                f"RSS {procs.rss_bytes(pid) / 2**20:.1f} MiB"
            )
    elapsed = time.monotonic() - started
    cpu = procs.cpu_seconds(pid) - cpu_before
    samples = sampler.samples
    after_warmup = [s for s in samples if s[1] >= warmup] or samples[-1:]
    base = after_warmup[0][2]
    final = samples[-1][2]
    peak = max(s[2] for s in after_warmup)
    return {
        "requests": done,
        "errors": errors,
        "seconds": round(elapsed, 1),
        "rps": round(done / elapsed, 1),
        "cpu_ms_per_request": round(cpu / done * 1000, 4),
        "warmup_requests": warmup,
        "rss_start_mib": round(samples[0][2] / 2**20, 2),
        "rss_after_warmup_mib": round(base / 2**20, 2),
        "rss_final_mib": round(final / 2**20, 2),
        "rss_peak_after_warmup_mib": round(peak / 2**20, 2),
        "rss_median_after_warmup_mib": round(
            statistics.median(s[2] for s in after_warmup) / 2**20, 2
        ),
        "growth_after_warmup_pct": round((final - base) / base * 100, 2),
        "peak_growth_after_warmup_pct": round((peak - base) / base * 100, 2),
        "samples": [
            {"t": t, "requests": n, "rss_mib": round(rss / 2**20, 2)} for t, n, rss in samples
        ],
    }
