"""`modelyard handover list|apply|discard`: an operator sees what stopped replicas left in the
state folder, and settles the files a start set aside."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from modelyard.cli import app
from modelyard.state.handover import Move, spool
from modelyard.state.redis import RedisStore
from tests.state.conftest import REDIS_URL, unique_prefix

pytestmark = pytest.mark.redis

SPENT = "spent:month:total:2026-12"
CALLS = "circuit:cheap:calls"
DAY = 86400.0


class Deployment:
    """A config on a Redis prefix of its own, and its state folder."""

    def __init__(self, tmp_path: Path) -> None:
        self.prefix = unique_prefix()
        self.config = tmp_path / "prod.yaml"
        self.config.write_text(
            "models:\n  fine: {local: {type: fake}}\n"
            f"state: {{backend: redis, url: '{REDIS_URL}', prefix: '{self.prefix}', "
            "on_unavailable: local}\n",
            encoding="utf-8",
        )
        self.folder = tmp_path / ".modelyard" / "prod.yaml"
        self.location = RedisStore(REDIS_URL, prefix=self.prefix).location

    def spool(
        self, spent: float, *, age: float = 0.0, location: str = "", backend: str = "redis"
    ) -> Path:
        """A spool file owed to this config's store (or the one at `location`), written
        `age` seconds ago and never sent."""
        move = Move(
            id=f"moved-{time.time_ns()}-0", changes=((SPENT, spent, 40 * DAY), (CALLS, 2.0, None))
        )
        return spool(
            self.folder,
            backend,
            [move],
            now=time.time() - age,
            location=location or self.location,
        )

    def run(self, *args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(
            app,
            ["handover", args[0], str(self.config), *args[1:]],
            input=input,
            env={"COLUMNS": "250"},
        )

    def counter(self, key: str) -> float:
        async def read() -> float:
            store = RedisStore(REDIS_URL, prefix=self.prefix)
            try:
                return await store.counter(key)
            finally:
                await store.aclose()

        return asyncio.run(read())

    def files(self) -> list[str]:
        return sorted(path.name for path in self.folder.iterdir())


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    made = Deployment(tmp_path)
    yield made

    async def clean() -> None:
        store = RedisStore(REDIS_URL, prefix=made.prefix)
        await store.clear_prefix()
        await store.aclose()

    asyncio.run(clean())


def held(path: Path) -> Path:
    """`path` set aside as a start does with a file older than the store remembers."""
    return path.rename(path.with_name(path.name + ".held"))


def test_list_shows_each_file_its_status_age_and_what_it_holds(deployment: Deployment) -> None:
    pending = deployment.spool(0.25, age=3600)
    old = held(deployment.spool(0.5, age=2 * DAY))
    corrupt = deployment.folder / "state-handover-7-0badf00d.json.corrupt"
    corrupt.write_text('{"version": 1, "mov', encoding="utf-8")
    result = deployment.run("list")
    assert result.exit_code == 0, result.output
    assert "1 pending, 1 held, 1 corrupt, 0 discarded" in result.output
    lines = result.output.splitlines()
    rows = {
        line.split()[0]: (line, lines[n + 1]) for n, line in enumerate(lines) if "state-" in line
    }
    line, holds = rows[pending.name]
    assert "pending" in line and "written 1.0 h ago" in line
    assert f"for redis at {deployment.location}" in line
    assert holds.strip() == f"{SPENT} $0.250000, and 1 other counter(s)"
    line, holds = rows[old.name]
    assert "held (may count twice)" in line and "written 2.0 d ago" in line
    assert holds.strip() == f"{SPENT} $0.500000, and 1 other counter(s)"
    line, holds = rows[corrupt.name]
    assert "corrupt" in line and "cannot be read" in holds
    body = json.loads(deployment.run("list", "--json").stdout)
    listed = {entry["file"]: entry for entry in body["files"]}
    assert listed[old.name]["counters"] == {SPENT: 0.5, CALLS: 2.0}
    assert listed[old.name]["may_count_twice"] is True
    assert listed[pending.name]["for_this_config"] is True
    assert listed[pending.name]["location"] == deployment.location


def test_a_held_file_is_applied_only_when_told_it_may_count_twice(
    deployment: Deployment,
) -> None:
    old = held(deployment.spool(0.5, age=2 * DAY))
    declined = deployment.run("apply", old.name, input="n\n")
    assert declined.exit_code == 1, declined.output
    assert "COUNTS IT TWICE" in " ".join(declined.output.split())
    assert deployment.files() == [old.name] and deployment.counter(SPENT) == 0.0
    result = deployment.run("apply", old.name, "--yes")
    assert result.exit_code == 0, result.output
    assert "COUNTS IT TWICE" in " ".join(result.output.split())
    assert f"applied {old.name}" in result.output
    assert deployment.counter(SPENT) == pytest.approx(0.5)
    assert deployment.counter(CALLS) == pytest.approx(2.0)
    assert deployment.files() == []


def test_a_pending_file_is_applied_once_without_a_warning(deployment: Deployment) -> None:
    pending = deployment.spool(0.25)
    copy = pending.read_bytes()
    result = deployment.run("apply", pending.name)
    assert result.exit_code == 0, result.output
    assert "TWICE" not in result.output and deployment.files() == []
    pending.write_bytes(copy)  # a replica handing it over too: its moves are applied once
    assert deployment.run("apply", pending.name).exit_code == 0
    assert deployment.counter(SPENT) == pytest.approx(0.25)


def test_a_file_for_another_store_or_unreadable_is_not_applied(deployment: Deployment) -> None:
    foreign = deployment.spool(0.25, location="10.0.0.9:6379/0, other:*")
    result = deployment.run("apply", foreign.name, "--yes")
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "written for the state store redis at 10.0.0.9:6379/0, other:*" in said
    assert "--same-store" in said
    listed = deployment.run("list")
    assert "not this config's" in listed.output
    corrupt = deployment.folder / "state-handover-7-0badf00d.json.corrupt"
    corrupt.write_text("{not json", encoding="utf-8")
    assert deployment.run("apply", corrupt.name, "--yes").exit_code == 2
    assert deployment.run("apply", "state-handover-1-nosuch.json").exit_code == 2
    assert deployment.files() == sorted([foreign.name, corrupt.name])
    assert deployment.counter(SPENT) == 0.0


def test_discard_moves_a_file_aside_and_says_what_it_held(deployment: Deployment) -> None:
    old = held(deployment.spool(0.5, age=2 * DAY))
    result = deployment.run("discard", old.name)
    assert result.exit_code == 0, result.output
    assert f"moved aside as {old.name}.discarded" in result.output
    assert f"{SPENT} $0.500000" in result.output
    assert deployment.files() == [f"{old.name}.discarded"]
    assert "0 pending, 0 held, 0 corrupt, 1 discarded" in deployment.run("list").output
    assert deployment.run("apply", f"{old.name}.discarded", "--yes").exit_code == 2
    assert deployment.counter(SPENT) == 0.0


def test_same_store_applies_a_file_naming_this_store_at_another_address(
    deployment: Deployment,
) -> None:
    # The config named the server by its IP then, by its host name now: one store, and a
    # start keeps the file, as it cannot tell.
    elsewhere = deployment.spool(0.25, location=f"10.0.0.9:6379/0, {deployment.prefix}*")
    assert deployment.run("apply", elsewhere.name).exit_code == 2
    result = deployment.run("apply", elsewhere.name, "--same-store")
    assert result.exit_code == 0, result.output
    assert deployment.counter(SPENT) == pytest.approx(0.25)
    assert deployment.files() == []
    postgres = deployment.spool(0.5, location=deployment.location, backend="postgres")
    assert deployment.run("apply", postgres.name, "--same-store").exit_code == 2  # never
    assert deployment.counter(SPENT) == pytest.approx(0.25)
