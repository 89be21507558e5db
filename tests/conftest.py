"""Shared fixtures: where example configs live, a helper to write a config to disk, a record of
the config texts parsed, and an OpenTelemetry collector."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.otlp_collector import OtlpCollector
from tests.fakes.tcp_relay import TcpRelay

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


ROOMY = "{connect: 10.0, total: 10.0, first_token: 10.0, stall: 10.0}"
"""Provider time limits with room for a loaded 2-core machine: a test not about a time limit
never meets one. The `timeouts` fixture's value, unless a test is marked with `tight_limits`."""


def tight_limits(timeouts: str) -> pytest.MarkDecorator:
    """Mark a test about a time limit: its `timeouts` are these exact values, not ROOMY."""
    return pytest.mark.parametrize("timeouts", [timeouts], ids=["tight"])


@pytest.fixture
def timeouts() -> str:
    """The provider time limits (a YAML flow mapping) of a test's config: ROOMY by default."""
    return ROOMY


def skip_without_shared_data(config: Path) -> None:
    """Skip a test of an example that replays ../shared/data when that folder is not here."""
    from modelyard.evaluation.recordings import data_root

    if "shared:" in config.read_text(encoding="utf-8") and data_root() is None:
        pytest.skip(f"{config.name} replays the shared data folder, which is absent")


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write YAML text to a config file in a temporary directory and return its path."""

    def write(text: str, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every config text `config.loader.parse` is given while the test runs, in order (to
    check that a command reads its config once)."""
    from modelyard.config import loader

    texts: list[str] = []
    parse = loader.parse

    def counting(text: str, **kwargs: Any) -> loader.LoadedConfig:
        texts.append(text)
        return parse(text, **kwargs)

    monkeypatch.setattr(loader, "parse", counting)
    return texts


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpCollector]:
    """An OTLP/HTTP traces collector on 127.0.0.1, and span batches exported every 50 ms."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    running = OtlpCollector()
    yield running
    running.close()


@pytest.fixture
def postgres_relay() -> Iterator[TcpRelay]:
    """A relay, listening, to the real PostgreSQL at 127.0.0.1:5432: cut or stall it."""
    running = TcpRelay("127.0.0.1", 5432)
    running.restore()
    yield running
    running.close()


def relayed_postgres(relay: TcpRelay) -> str:
    """The URL of database `test` through `relay`."""
    return f"postgresql://postgres@127.0.0.1:{relay.port}/test"


def outage_told(caplog: pytest.LogCaptureFixture, logger: str) -> tuple[str, str]:
    """The two lines an outage of a background writer's store is told in (when it began, when
    it ended), asserting there were no others, `logger`'s first an error, and no traceback
    (from modelyard or its driver: a test's relay of the tests before may log as it goes)."""
    ours = [r for r in caplog.records if r.name.startswith(("modelyard", "asyncpg"))]
    assert not [r for r in ours if r.exc_info], "a traceback was logged"
    lines = [(r.name, r.levelname, r.getMessage()) for r in ours]
    assert len(lines) == 2, lines
    (name, level, began), (_, _, ended) = lines
    assert (name, level) == (logger, "ERROR")
    return began, ended


async def killed_once_written(script: str, *args: str) -> None:
    """Run `script` in a Python process of its own and kill it outright (SIGKILL, as the OOM
    killer would: no shutdown, no last flush) once it prints `written`."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        textwrap.dedent(script),
        *args,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert child.stdout is not None
    assert await asyncio.wait_for(child.stdout.readline(), 30) == b"written\n"
    child.send_signal(signal.SIGKILL)
    await child.wait()


@pytest.fixture
def quiet(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """What went unclosed or failed unseen: ResourceWarnings and unraisable errors."""
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        found: list[str] = []
        yield found
        gc.collect()
    found += [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]
    found += [repr(u.exc_value) for u in unraisable]
