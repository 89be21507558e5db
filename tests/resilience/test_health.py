"""Health: the yard reports its circuits, and `modelyard health` prints them."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

import modelyard
from modelyard.cli import app
from modelyard.errors import ModelError

CONFIG = """
models:
  broken:
    local: {type: fake, default: {error: unavailable}}
    breaker: {min_calls: 2, failure_rate: 0.5}
  fine:
    local: {type: fake, default: "fine"}
    breaker: {}
"""

Write = Callable[[str], Path]


async def test_yard_health_shows_an_open_circuit(write_config: Write) -> None:
    async with modelyard.load(write_config(CONFIG)) as yard:
        assert (await yard.health()).healthy
        for _ in range(3):
            with contextlib.suppress(ModelError):
                await yard.complete("broken", "x")
        report = await yard.health()
    assert not report.healthy
    assert report.degraded == ["model:broken"]
    body = report.to_dict()
    assert body["healthy"] is False
    assert isinstance(body["circuits"], list) and len(body["circuits"]) == 2


def test_health_command_lists_the_circuits_of_a_fresh_load(write_config: Write) -> None:
    result = CliRunner().invoke(app, ["health", str(write_config(CONFIG))])
    assert result.exit_code == 0, result.output
    assert "model:broken" in result.output and "closed" in result.output


def test_health_probe_exits_non_zero_when_a_circuit_opens(write_config: Write) -> None:
    text = CONFIG.replace("min_calls: 2", "min_calls: 1")
    result = CliRunner().invoke(app, ["health", str(write_config(text)), "--probe"])
    assert result.exit_code == 1
    assert "probe broken: unavailable" in result.output
    assert "open" in result.output


def test_health_probe_reaches_each_model_itself_not_its_fallbacks(write_config: Write) -> None:
    # A down model with `fallbacks:` read "answered by" its fallback, exit 0, and the probes
    # counted against the fallback's circuit instead of its own.
    text = (
        "models:\n  down:\n    local: {type: fake, default: {error: unavailable}}\n"
        "    breaker: {min_calls: 5}\n    fallbacks: [spare]\n"
        "  spare:\n    local: {type: fake, default: spare says hi}\n    breaker: {}\n"
    )
    result = CliRunner().invoke(app, ["health", str(write_config(text)), "--probe", "--json"])
    assert result.exit_code == 1, result.output  # every circuit closed, but a probe failed
    body = json.loads(result.stdout)
    probes = {p["model"]: p for p in body["probes"]}
    assert probes["down"]["ok"] is False and probes["down"]["outcome"].startswith("unavailable")
    assert probes["spare"] == {**probes["spare"], "ok": True, "outcome": "answered by spare"}
    calls = {c["scope"]: c["calls"] for c in body["circuits"]}
    assert calls == {"model:down": 1, "model:spare": 1}


def test_health_names_the_models_disabled_for_want_of_a_key(write_config: Write) -> None:
    text = (
        "providers:\n  hosted: {type: openai, api_key: '${NO_SUCH_KEY}', optional: true}\n"
        "models:\n  gpt: {provider: hosted, id: gpt-4o-mini-2024-07-18,"
        " price: {input: 1, output: 1}}\n  fine: {local: {type: fake}}\n"
    )
    result = CliRunner().invoke(app, ["health", str(write_config(text)), "--json"])
    assert result.exit_code == 0, result.output
    assert '"gpt": "provider \'hosted\': environment variable NO_SUCH_KEY is not set"' in (
        result.stdout
    )
    plain = CliRunner().invoke(app, ["health", str(write_config(text))])
    assert "no circuits: every hosted model is disabled" in plain.stdout


@pytest.mark.parametrize("where", ["config", "serve --port"])
def test_health_shows_the_circuits_of_the_gateway_serving_the_config(
    tmp_path: Path, where: str
) -> None:
    # With the default state (SQLite), circuits are counted in each serving process's memory:
    # read from a fresh process, the command printed every circuit closed, exit 0, while the
    # gateway had `broken` open. It asks the gateway at the config's address instead.
    import subprocess
    import sys
    import time

    import httpx2

    from tests.fakes.server import free_port

    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        CONFIG + "systems:\n  main: {type: fallback, chain: [broken, fine]}\n"
        f"gateway: {{port: {port}}}\n"
    )
    modelyard_cli = str(Path(sys.executable).parent / "modelyard")
    serve, ask = [modelyard_cli, "serve", str(config)], ["health", str(config)]
    if where != "config":  # served elsewhere than the config says: health is told where
        port = free_port()
        serve += ["--port", str(port)]
        ask += ["--gateway", f"http://127.0.0.1:{port}"]
    process = subprocess.Popen(serve, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx2.TransportError):
                if httpx2.get(url + "/healthz").status_code == 200:
                    break
            assert process.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        body = {"model": "main", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(3):
            assert httpx2.post(url + "/v1/chat/completions", json=body).status_code == 200
        result = CliRunner().invoke(app, ask, env={"COLUMNS": "200"})
    finally:
        process.kill()
        process.wait(10)
    assert result.exit_code == 1, result.output
    assert f"the gateway serving it at {url}" in " ".join(result.output.split())
    (row,) = [line for line in result.output.splitlines() if "model:broken" in line]
    assert "open" in row
