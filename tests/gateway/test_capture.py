"""Captured traffic: the gateway keeps what answered requests asked and got (opt-in), and
`modelyard traffic` writes it as a labelled set that `eval` replays against another config."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import anthropic
import openai
import pytest
from tests.gateway.conftest import SYSTEMS, Running
from typer.testing import CliRunner

from modelyard.cli import app
from modelyard.errors import ConfigError
from modelyard.observability.decision_log import read_traffic
from modelyard.yard import load

CAPTURE = "\ngateway:\n  capture: {}\n"


def captured(running: Running, count: int) -> list[dict[str, object]]:
    """The captured exchanges once `count` are written (the log writes every half second)."""
    path = running.config.parent / ".modelyard" / running.config.name / "requests.sqlite3"
    deadline = time.monotonic() + 10
    while True:
        found = read_traffic(path) if path.exists() else []
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_answered_requests_are_kept_with_their_messages_and_answers(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway(CAPTURE)
    client = openai.OpenAI(base_url=running.openai_url, api_key="x", max_retries=0)
    client.chat.completions.create(model="support", messages=[{"role": "user", "content": "ping"}])
    stream = client.chat.completions.create(
        model="cheap",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello"},
        ],
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
        "the cheap answer"
    )
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(
            model="cheap", messages=[{"role": "user", "content": "fail"}]
        )
    claude = anthropic.Anthropic(base_url=running.url, api_key="x", max_retries=0)
    claude.messages.create(
        model="strong", max_tokens=50, messages=[{"role": "user", "content": "why?"}]
    )
    found = captured(running, 3)
    assert [(e["target"], e["messages"], e["answer"]) for e in found] == [
        ("support", [["user", "ping"]], "pong"),
        ("cheap", [["system", "Be brief."], ["user", "hello"]], "the cheap answer"),
        ("strong", [["user", "why?"]], "the strong answer"),
    ]
    assert found[0]["model"] == "cheap" and float(str(found[0]["cost"])) > 0


def test_traffic_replays_against_another_config_through_eval(
    serve_gateway: Callable[..., Running], tmp_path: Path
) -> None:
    running = serve_gateway(CAPTURE)
    client = openai.OpenAI(base_url=running.openai_url, api_key="x", max_retries=0)
    for prompt in ("ping", "what is new?"):
        client.chat.completions.create(
            model="support", messages=[{"role": "user", "content": prompt}]
        )
    assert len(captured(running, 2)) == 2
    runner = CliRunner()
    out = tmp_path / "traffic.jsonl"
    exported = runner.invoke(app, ["traffic", str(running.config), "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["messages"], r["label"], r["model"]) for r in rows] == [
        ([{"role": "user", "content": "ping"}], "pong", "cheap"),
        ([{"role": "user", "content": "what is new?"}], "the cheap answer", "cheap"),
    ]
    # the candidate answers "ping" as before and everything else differently
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(SYSTEMS.replace('default: "the cheap answer"', 'default: "news!"'))
    replayed = runner.invoke(app, ["eval", str(candidate), "support", "--data", str(out), "--json"])
    assert replayed.exit_code == 0, replayed.output
    report = json.loads(replayed.stdout)["report"]
    assert report["n"] == 2 and report["accuracy"] == 0.5


def test_only_the_chosen_targets_and_plain_conversations_are_kept(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway("\ngateway:\n  capture: {targets: [strong]}\n")
    client = openai.OpenAI(base_url=running.openai_url, api_key="x", max_retries=0)
    for model in ("cheap", "strong", "cheap"):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    client.chat.completions.create(
        model="strong", messages=[{"role": "user", "content": "find it"}], tools=[tool]
    )
    assert [(e["target"], e["messages"]) for e in captured(running, 1)] == [
        ("strong", [["user", "hi"]])
    ]
    log = running.config.parent / ".modelyard" / running.config.name / "requests.sqlite3"
    deadline = time.monotonic() + 10
    while _logged(log) < 4 and time.monotonic() < deadline:  # every request is logged...
        time.sleep(0.1)
    assert _logged(log) == 4
    assert len(captured(running, 1)) == 1  # ...one of them with its exchange


def _logged(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT count(*) FROM requests").fetchone()[0])


def test_without_capture_nothing_is_kept_and_traffic_says_why(
    serve_gateway: Callable[..., Running], tmp_path: Path
) -> None:
    running = serve_gateway()
    client = openai.OpenAI(base_url=running.openai_url, api_key="x", max_retries=0)
    client.chat.completions.create(model="cheap", messages=[{"role": "user", "content": "hi"}])
    time.sleep(0.8)
    result = CliRunner().invoke(
        app, ["traffic", str(running.config), "--out", str(tmp_path / "t.jsonl")]
    )
    assert result.exit_code == 2
    assert "gateway.capture is off in this config" in " ".join(result.output.split())
    assert not (tmp_path / "t.jsonl").exists()


def test_capture_without_a_request_log_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(SYSTEMS + "\ngateway:\n  request_log: null\n  capture: {sample: 0.5}\n")
    with pytest.raises(ConfigError, match="capture keeps traffic in the request log"):
        load(config)


def test_reading_traffic_from_no_log_or_an_old_one_says_so(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no request log at"):
        read_traffic(tmp_path / "missing.sqlite3")
    old = tmp_path / "old.sqlite3"
    with contextlib.closing(sqlite3.connect(old)) as db:
        db.execute("CREATE TABLE requests (id TEXT PRIMARY KEY, at REAL)")
    with pytest.raises(ValueError, match="holds no captured traffic"):
        read_traffic(old)
    (tmp_path / "notes.txt").write_text("not a database at all")
    with pytest.raises(ValueError, match="holds no captured traffic"):
        read_traffic(tmp_path / "notes.txt")
