"""Three processes sharing the real Redis never pass a budget between them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT

pytestmark = pytest.mark.redis

CAP = 0.004
CONFIG = """
# A generous timeout: the cap is what is tested, and a loaded machine stalls Redis calls.
state: {{backend: redis, url: "redis://127.0.0.1:6379/0", prefix: "{prefix}", timeout: 10}}
ledger: {{enabled: false}}
alerts: {{anomaly: null}}
models:
  m:
    local: {{type: fake, default: {{text: "a fairly short answer here", latency: 0.01}}}}
    price: {{input: 1.0, output: 2.0}}
    max_output_tokens: 100
systems:
  s: {{type: fallback, chain: [m]}}
budgets:
  - {{name: tiny, scope: total, window: day, limit: {cap}}}
"""
_REFUSAL = re.compile(r"\$([\d.]+) of \$([\d.]+) is spent or reserved .* up to \$([\d.]+)")


def test_three_processes_on_one_redis_never_pass_the_cap(
    write_config: Callable[..., Path],
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    path = write_config(CONFIG.format(prefix=prefix, cap=CAP))
    try:
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.cost.budget_worker", str(path), "s", "60"],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        outputs = []
        for worker in workers:
            out, err = worker.communicate(timeout=60)
            assert worker.returncode == 0, err
            outputs.append(json.loads(out))
        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        spent_keys = list(client.scan_iter(match=f"{prefix}c:spent:tiny:*"))
        settled = sum(float(client.get(k) or 0) for k in spent_keys)
        used_keys = list(client.scan_iter(match=f"{prefix}c:budget:tiny:*"))
        used = sum(float(client.get(k) or 0) for k in used_keys)
    finally:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
    costs = [c for o in outputs for c in o["costs"]]
    refusals = [r for o in outputs for r in o["refusals"]]
    assert not [e for o in outputs for e in o["other"]]
    assert costs and refusals, "the cap must admit some requests and refuse others"
    assert sum(costs) <= CAP + 1e-12
    assert settled == pytest.approx(sum(costs)) and settled <= CAP + 1e-12
    assert used == pytest.approx(settled), "every reservation was settled or released"
    for message in refusals:
        match = _REFUSAL.search(message)
        assert match is not None, message
        held, limit, worst = (float(g) for g in match.groups())
        # The message rounds to micro-dollars.
        assert held + worst > limit - 2e-6, "refused although the request would have fitted"
