"""`modelyard serve` as a process: answers, reloads on SIGHUP, drains on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import openai
import pytest
from tests.fakes.server import free_port
from tests.gateway.conftest import SYSTEMS

from modelyard.gateway import server

MODELYARD = str(Path(sys.executable).parent / "modelyard")


def until_serving(
    process: subprocess.Popen[bytes], url: str, output: Callable[[], str], seconds: float = 20
) -> None:
    """Wait until the gateway at `url` answers; `output` is what a process that died said."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx2.get(url + "/healthz").status_code == 200:
                return
        except httpx2.TransportError:
            pass
        assert process.poll() is None, output()
        assert time.monotonic() < deadline, "serve did not come up"
        time.sleep(0.1)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    config = tmp_path / "config.yaml"
    config.write_text(SYSTEMS, encoding="utf-8")
    port = free_port()
    process = subprocess.Popen(
        [MODELYARD, "serve", str(config), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    until_serving(process, url, lambda: process.stdout.read().decode())  # type: ignore[union-attr]
    yield process, url, config
    if process.poll() is None:
        process.kill()
        process.wait(10)


def test_serve_answers_and_reloads_on_sighup(
    served: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    process, url, config = served
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)

    def ask() -> str | None:
        messages = [{"role": "user", "content": "hi"}]
        reply = client.chat.completions.create(model="strong", messages=messages)  # type: ignore[arg-type]
        return reply.choices[0].message.content

    assert ask() == "the strong answer"
    config.write_text(SYSTEMS.replace('"the strong answer"', '"reloaded"'), encoding="utf-8")
    os.kill(process.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while ask() != "reloaded":
        assert time.monotonic() < deadline, "SIGHUP did not reload"
        time.sleep(0.1)


def test_sigterm_drains_requests_in_flight(
    served: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    process, url, _ = served
    results: list[str] = []

    def slow() -> None:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model="cheap", messages=[{"role": "user", "content": "slow"}]
        )
        results.append(reply.choices[0].message.content or "")

    thread = threading.Thread(target=slow)
    thread.start()
    # SIGTERM once the slow request is being served (the readiness probe counts itself too).
    deadline = time.monotonic() + 10
    while httpx2.get(f"{url}/readyz").json()["in_flight"] < 2:
        assert time.monotonic() < deadline, "the slow request never arrived"
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    thread.join(10)
    assert results == ["late"]
    # uvicorn re-raises SIGTERM once it has drained, so the exit status names the signal.
    assert process.wait(10) in (0, -signal.SIGTERM)


def test_bad_config_fails_before_binding(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("models:\n  a: {local: {type: fak}}\n", encoding="utf-8")
    done = subprocess.run([MODELYARD, "serve", str(config)], capture_output=True, timeout=30)
    assert done.returncode == 2
    assert b"bad.yaml:2" in done.stderr and b"fak" in done.stderr


def serve_logging_beside(config: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """`modelyard serve config > serve.log` with the log in the config's folder, once it answers."""
    port = free_port()
    log = config.parent / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [MODELYARD, "serve", str(config), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    until_serving(process, f"http://127.0.0.1:{port}", log.read_text)
    time.sleep(0.5)  # let the watch arm
    return process, log


def test_a_broken_config_beside_its_log_is_refused_once(tmp_path: Path) -> None:
    """The refusal is logged into the watched folder: that change must not retry the same text."""
    config = tmp_path / "config.yaml"
    config.write_text(SYSTEMS + "gateway: {watch_config: true}\n", encoding="utf-8")
    process, log = serve_logging_beside(config)
    try:
        broken = tmp_path / "config.yaml.new"
        broken.write_text("models: {\n", encoding="utf-8")
        broken.replace(config)

        def refusals() -> list[str]:
            return [line for line in log.read_text().splitlines() if "reload refused" in line]

        deadline = time.monotonic() + 15
        while not refusals():  # a loaded machine may take a while to see the change
            assert time.monotonic() < deadline, "the broken config was never read"
            time.sleep(0.1)
        time.sleep(2.0)  # its own log line has been seen by now (the debounce is 0.3 s)
        assert len(refusals()) == 1, refusals()
    finally:
        process.kill()
        process.wait(10)


def test_a_refused_config_reverted_to_the_one_serving_says_so_once(tmp_path: Path) -> None:
    """Back to the text being served after a refusal, nothing is reloaded: the log said nothing
    more, and its last line, the refusal, read as if the gateway were still broken."""
    config = tmp_path / "config.yaml"
    serving = SYSTEMS + "gateway: {watch_config: true}\n"
    config.write_text(serving, encoding="utf-8")
    process, log = serve_logging_beside(config)
    try:
        for text in ("models: {\n", serving):
            edited = tmp_path / "config.yaml.new"
            edited.write_text(text, encoding="utf-8")
            edited.replace(config)
            deadline = time.monotonic() + 15
            while "reload refused" not in log.read_text():
                assert time.monotonic() < deadline, "the broken config was never read"
                time.sleep(0.1)

        def back() -> list[str]:
            return [line for line in log.read_text().splitlines() if "nothing to apply" in line]

        deadline = time.monotonic() + 15
        while not back():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        time.sleep(2.0)  # its own log line has been seen by now (the debounce is 0.3 s)
        lines = log.read_text().splitlines()
        assert len(back()) == 1 and lines[-1] == back()[0], lines
        assert "serving config" in back()[0] and str(config) in back()[0]
    finally:
        process.kill()
        process.wait(10)


def test_a_log_written_beside_a_watched_config_does_not_feed_itself(tmp_path: Path) -> None:
    """`serve cfg.yaml > serve.log` in the config's folder: each change the watcher logs is a
    change in the folder, which must not be logged again and again while nothing happens."""
    config = tmp_path / "config.yaml"
    config.write_text(SYSTEMS + "gateway: {watch_config: true}\n", encoding="utf-8")
    process, log = serve_logging_beside(config)
    try:
        (tmp_path / "notes.txt").write_text("a change beside the config", encoding="utf-8")
        time.sleep(2.0)  # then nothing happens (the watcher's debounce is 0.3 s)
        lines = log.read_text().splitlines()
        assert len(lines) < 5, lines
    finally:
        process.kill()
        process.wait(10)


def test_serve_warns_at_start_of_a_model_id_that_is_a_movable_alias(tmp_path: Path) -> None:
    """`check` warns of an unpinned id; a gateway started on it must say so in its log too,
    where an operator looks, or answers and prices change under it unnoticed."""
    config = tmp_path / "config.yaml"
    alias = (
        "providers:\n  oa: {type: openai, api_key: sk-x, base_url: 'http://127.0.0.1:9/v1'}\n"
        "  mini: {provider: oa, id: gpt-4o-mini, price: {input: 1, output: 1}}\n"
    )
    config.write_text(SYSTEMS.replace("models:\n", alias.replace("  mini", "models:\n  mini")))
    process, log = serve_logging_beside(config)
    try:
        (line,) = [line for line in log.read_text().splitlines() if "gpt-4o-mini" in line]
        assert "WARNING" in line and "alias" in line and "'mini'" in line
    finally:
        process.kill()
        process.wait(10)


def test_a_worker_process_logs_as_the_serve_process_does(tmp_path: Path) -> None:
    """With --workers N each worker is a fresh interpreter that builds the app itself: its
    reloads and notes reach the log with time, level and logger, as the serve process's do
    (they had come out bare, and INFO lines not at all)."""
    config = tmp_path / "config.yaml"
    config.write_text(SYSTEMS, encoding="utf-8")
    code = (
        "import logging; from modelyard.gateway.server import app_factory; app_factory(); "
        "logging.getLogger('modelyard.gateway').info('worker ready')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "MODELYARD_CONFIG": str(config)},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    line = rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO modelyard.gateway: worker ready$"
    assert re.search(line, done.stderr, re.MULTILINE), done.stderr


def test_a_worker_of_several_logs_the_config_version_it_serves(tmp_path: Path) -> None:
    """After a SIGHUP to `serve --workers N` the new workers said nothing: the log had no word
    that the edited config now serves (one process logs its reload)."""
    config = tmp_path / "config.yaml"
    config.write_text(SYSTEMS, encoding="utf-8")
    code = "from modelyard.gateway.server import app_factory; app_factory()"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "MODELYARD_CONFIG": str(config), "MODELYARD_WORKERS": "2"},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    line = rb"INFO modelyard.serve: worker \d+ serves config.yaml \(version [0-9a-f]{12}\)$"
    assert re.search(line, done.stderr, re.MULTILINE), done.stderr


def test_a_worker_restarted_on_a_config_that_no_longer_loads_says_why_in_one_line(
    tmp_path: Path,
) -> None:
    """SIGHUP to `serve --workers N` starts new workers on the file; when it no longer loads,
    uvicorn keeps the running ones, and the new one's log is the reason, not a traceback."""
    config = tmp_path / "config.yaml"
    config.write_text(SYSTEMS.replace("price: {input: 1.0", "price: {input: lots"))
    code = "from modelyard.gateway.server import app_factory; app_factory()"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "MODELYARD_CONFIG": str(config)},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert b"Traceback" not in done.stderr, done.stderr
    assert b"worker not started, the workers running keep serving: " in done.stderr
    assert f"{config}:".encode() in done.stderr and b"models.cheap.price.input" in done.stderr


def test_the_workers_of_serve_count_in_one_folder_that_leaves_with_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --workers 2`: the workers (fresh interpreters, started by uvicorn.run) inherit the
    folder where they all count, so a scrape of any one shows every request
    (tests/observability/test_metrics.py); one worker needs none."""
    config = tmp_path / "config.yaml"
    config.write_text(SYSTEMS, encoding="utf-8")
    seen: list[str | None] = []

    def run(*args: object, **kwargs: object) -> None:
        folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        seen.append(folder if folder is None or Path(folder).is_dir() else "missing")

    monkeypatch.setattr(server.uvicorn, "run", run)
    # as they were, afterwards
    for name in ("PROMETHEUS_MULTIPROC_DIR", "MODELYARD_CONFIG", server.WORKERS):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    server.serve(config, host=None, port=None, workers=1)
    server.serve(config, host=None, port=None, workers=2)
    assert seen[0] is None
    assert seen[1] is not None and seen[1] != "missing"
    assert not Path(seen[1]).exists()  # gone once the gateway stops


def serve_workers(
    config: Path, workers: int = 2, **env: str
) -> tuple[subprocess.Popen[bytes], str]:
    """`modelyard serve config --workers N`, once it answers (its output in serve.log beside)."""
    port = free_port()
    with (config.parent / "serve.log").open("wb") as out:
        process = subprocess.Popen(
            [MODELYARD, "serve", str(config), "--port", str(port), "--workers", str(workers)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    url = f"http://127.0.0.1:{port}"
    until_serving(process, url, (config.parent / "serve.log").read_text, seconds=60)
    return process, url


SLOW_BUILD = '''
import pathlib
import time


def build():
    """A model whose build takes as long as the file `delay` beside this module says."""
    time.sleep(float(pathlib.Path(__file__).with_name("delay").read_text()))
    return lambda request: "built"
'''


def test_sighup_restarts_workers_whose_config_takes_a_while_to_build(tmp_path: Path) -> None:
    """SIGHUP to `serve --workers 2` starts each worker anew on the file, and uvicorn retires
    the old one once the new one serves. Local models take seconds to load (the quickstart's
    build takes 8 s on 2 cores): a new worker must be given that long, or the restart is
    abandoned and the workers serve the old config on."""
    (tmp_path / "slowbuild.py").write_text(SLOW_BUILD, encoding="utf-8")
    delay = tmp_path / "delay"
    delay.write_text("0", encoding="utf-8")
    slow = "  slow: {local: {type: callable, factory: 'slowbuild:build'}}\n"
    config = tmp_path / "config.yaml"
    config.write_text(SYSTEMS.replace("models:\n", "models:\n" + slow), encoding="utf-8")
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    process, url = serve_workers(config, PYTHONPATH=path)
    try:
        body = {"model": "strong", "messages": [{"role": "user", "content": "hi"}]}

        def answer() -> str:
            # A worker being retired can drop a connection it accepted as it stops (uvicorn's
            # restart, seen once in a loaded run): a client retries that, as the SDKs do.
            for attempt in range(3):
                try:
                    reply = httpx2.post(url + "/v1/chat/completions", json=body, timeout=30)
                    break
                except httpx2.TransportError:
                    if attempt == 2:
                        raise
            return str(reply.json()["choices"][0]["message"]["content"])

        assert answer() == "the strong answer"
        delay.write_text("6", encoding="utf-8")  # over uvicorn's default 5 s
        config.write_text(config.read_text().replace("the strong answer", "reloaded"))
        os.kill(process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 60
        while {answer() for _ in range(4)} != {"reloaded"}:
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.5)
        assert "not ready in time" not in (tmp_path / "serve.log").read_text()
    finally:
        process.terminate()
        process.wait(30)
