"""Which store each kind of counter lands in."""

from __future__ import annotations

from pathlib import Path

from modelyard.config.operations import StateSpec
from modelyard.config.resources import Resources
from modelyard.state.batched import BatchedStore
from modelyard.state.factory import live_store, shared_store
from modelyard.state.memory import MemoryStore
from modelyard.state.sqlite import SqliteStore


async def test_one_process_keeps_its_live_counters_in_memory(tmp_path: Path) -> None:
    # no disk round trip per request for a rate window when nobody else counts
    resources = Resources()
    try:
        assert isinstance(live_store(StateSpec(), tmp_path, resources), MemoryStore)
    finally:
        await resources.aclose()


async def test_several_workers_keep_their_live_counters_in_the_shared_file(
    tmp_path: Path,
) -> None:
    resources = Resources(workers=2)
    try:
        live = live_store(StateSpec(), tmp_path, resources)
        # counts batched and circuit states cached in front of it: no round trip per request
        assert isinstance(live, BatchedStore)
        assert isinstance(live.inner, SqliteStore)
        assert live.inner is shared_store(StateSpec(), tmp_path, resources)
        assert live is live_store(StateSpec(), tmp_path, resources)
    finally:
        await resources.aclose()


async def test_a_shared_server_batches_its_live_counters_each_flush_applied_once(
    tmp_path: Path,
) -> None:
    resources = Resources()
    spec = StateSpec(backend="redis", url="redis://127.0.0.1:6379/0")
    try:
        live = live_store(spec, tmp_path, resources)
        assert isinstance(live, BatchedStore) and live.applied_once
        assert live.inner is shared_store(spec, tmp_path, resources)
    finally:
        await resources.aclose()
