"""The library facade: load a config and ask it things."""

from __future__ import annotations

import asyncio
import gc
import re
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import modelyard
from modelyard.cli import app
from modelyard.errors import BadRequestError, ModelTimeoutError, NotFoundError, UnavailableError
from modelyard.streaming import collect
from modelyard.types import ChatRequest
from tests.fakes.openai_server import FakeOpenAI

CONFIG = """
models:
  flaky:
    local: {type: fake, default: {error: unavailable}}
  steady:
    local: {type: fake, default: "steady answer"}
    price: {input: 1.0, output: 1.0}
systems:
  main: {type: fallback, chain: [flaky, steady]}
"""


async def test_fallback_system_answers_with_the_second_member_and_records_why(
    write_config: Callable[[str], Path],
) -> None:
    async with modelyard.load(write_config(CONFIG)) as yard:
        response = await yard.complete("main", "hello")
    assert response.text == "steady answer"
    assert response.model == "steady"
    decision = response.decision
    assert decision is not None and decision.kind == "fallback"
    assert [d.node for d in decision.children] == ["flaky", "steady"]
    assert decision.children[0].error is not None and "unavailable" in decision.children[0].error


async def test_first_error_reaches_the_caller_when_all_fail(
    write_config: Callable[[str], Path],
) -> None:
    text = CONFIG.replace('default: "steady answer"', "default: {error: rate_limited}")
    async with modelyard.load(write_config(text)) as yard:
        with pytest.raises(UnavailableError) as caught:
            await yard.complete("main", "hello")
    assert caught.value.model == "flaky"


async def test_unknown_target_lists_what_exists(write_config: Callable[[str], Path]) -> None:
    async with modelyard.load(write_config(CONFIG)) as yard:
        with pytest.raises(NotFoundError) as caught:
            await yard.complete("nope", "hello")
    assert "main" in str(caught.value) and "steady" in str(caught.value)


def test_sync_facade(write_config: Callable[[str], Path]) -> None:
    with modelyard.load_sync(write_config(CONFIG)) as yard:
        assert yard.complete("steady", "hi").text == "steady answer"


def test_sync_facade_streams_and_the_last_chunk_is_the_whole_answer(
    write_config: Callable[[str], Path],
) -> None:
    with modelyard.load_sync(write_config(CONFIG)) as yard:
        chunks = list(yard.stream("main", "hi"))
        streamed = "".join(c.text for c in chunks if c.response is None)
        final = chunks[-1].response
        assert final is not None and streamed == final.text == "steady answer"
        assert final.model == "steady" and final.cost > 0  # the fallback's record came along
        assert yard.complete("steady", "again").text == "steady answer"  # the loop is free


def test_sync_facade_stream_raises_the_systems_error_and_stops_when_left(
    write_config: Callable[[str], Path],
) -> None:
    text = CONFIG.replace('default: "steady answer"', "default: {error: rate_limited}")
    with modelyard.load_sync(write_config(text)) as yard, pytest.raises(UnavailableError):
        list(yard.stream("main", "hi"))
    words = CONFIG.replace('"steady answer"', '"one two three four five six"')
    with modelyard.load_sync(write_config(words)) as yard:
        stream = yard.stream("steady", "hi")
        first = next(stream)
        assert first.text
        stream.close()  # left after one chunk: the reader is cancelled, the loop stays usable
        assert yard.complete("steady", "again").text == "one two three four five six"


@pytest.mark.parametrize(
    ("prompt", "fields", "message"),
    [
        ([], {}, "the request has no messages"),
        ([{"role": "wizard", "content": "hi"}], {}, "messages[0].role: expected system, user"),
        ("caf\udce9", {}, "messages[0]: not valid Unicode text (a lone surrogate at character 3"),
        (
            "hi",
            {"temprature": 0.2},
            "unknown request field 'temprature'; did you mean 'temperature'? known:",
        ),
    ],
)
async def test_a_bad_request_is_refused_naming_what_is_wrong(
    write_config: Callable[[str], Path], prompt: Any, fields: dict[str, Any], message: str
) -> None:
    async with modelyard.load(write_config(CONFIG)) as yard:
        with pytest.raises(BadRequestError) as caught:
            await yard.complete("steady", prompt, **fields)
    assert message in str(caught.value)


def test_sync_facade_left_open_at_exit_is_closed_and_its_spend_recorded(
    write_config: Callable[[str], Path],
) -> None:
    """A script that never closes its SyncYard (the README's one-liner) still has its calls in
    the ledger when it exits, and no 'Task was destroyed but it is pending' on stderr: the
    yard is closed at interpreter exit. It had lost the ledger's unwritten rows."""
    config = write_config(CONFIG)
    script = (
        "import modelyard\n"
        f"yard = modelyard.load_sync({str(config)!r})\n"
        "print(yard.complete('steady', 'hi').text)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "steady answer"
    assert "Task was destroyed" not in done.stderr and "never awaited" not in done.stderr
    costs = CliRunner().invoke(app, ["costs", str(config)], env={"COLUMNS": "200"})
    assert costs.exit_code == 0, costs.output
    assert "steady" in costs.stdout and "│        1 │" in costs.stdout


async def test_sync_facade_collected_inside_a_running_loop_is_closed_without_blocking_it(
    write_config: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Closing would have run a loop inside the running one, so it was skipped, with a warning
    that the unwritten spend was lost. The SyncYard's loop runs in a thread of its own: the
    collector hands the closing to it, and the spend reaches the ledger."""
    config = write_config(CONFIG)
    yard = modelyard.load_sync(config)
    assert (await asyncio.to_thread(yard.complete, "steady", "hi")).text == "steady answer"
    inner, thread = yard.yard, yard._runner.thread
    del yard
    gc.collect()
    thread.join(timeout=60)
    assert not thread.is_alive() and inner._closed
    assert "collected inside" not in caplog.text
    costs = await asyncio.to_thread(
        CliRunner().invoke, app, ["costs", str(config)], env={"COLUMNS": "200"}
    )
    assert "steady" in costs.stdout and "│        1 │" in costs.stdout, costs.stdout


HOSTED = """
providers:
  up: {{type: openai, base_url: "{url}/v1", api_key: sk-closed-TEST}}
models:
  hosted: {{provider: up, id: gpt-4o-mini, price: {{input: 1, output: 1}}}}
  fn: {{local: {{type: callable, function: "tests.test_yard:shout"}}}}
embedders:
  grams: {{local: {{type: hashing, dimensions: 16}}}}
systems:
  main: {{type: fallback, chain: [hosted, fn]}}
"""


def shout(request: ChatRequest) -> str:
    """A user's function model (HOSTED's `fn`)."""
    return request.last_user_text.upper()


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI().running() as server:
        assert isinstance(server, FakeOpenAI)
        yield server


async def test_a_closed_yard_refuses_every_call_saying_it_is_closed(
    write_config: Callable[[str], Path], upstream: FakeOpenAI
) -> None:
    """A yard used after `aclose` (or its `async with`) had the hosted model open a new
    connection pool that nothing ever closed (an unclosed-session ResourceWarning at exit),
    and a function model fail with 'cannot schedule new futures after shutdown'. Every call
    now says the yard is closed, and sends nothing."""
    config = write_config(HOSTED.format(url=upstream.url))
    async with modelyard.load(config) as yard:
        assert (await yard.complete("main", "hi")).text
    sent = len(upstream.requests)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "complete": lambda: yard.complete("hosted", "hi"),
        "function": lambda: yard.complete("fn", "hi"),
        "stream": lambda: collect(yard.stream("main", "hi")),
        "embed": lambda: yard.embed("grams", "hi"),
        "health": yard.health,
    }
    for name, call in calls.items():
        with pytest.raises(modelyard.YardClosedError) as caught:
            await call()
        assert isinstance(caught.value, RuntimeError), name
        assert f"the yard of {config} is closed" in str(caught.value), name
    assert len(upstream.requests) == sent
    await yard.aclose()  # closing again does nothing


SYNC_MISUSE = """
import asyncio, modelyard

def attempt(what, call):
    try:
        call()
    except Exception as exc:
        print(f"{{what}}: {{type(exc).__name__}}: {{exc}}")

yard = modelyard.load_sync({config!r})
print(yard.complete("steady", "hi").text)

async def notebook():  # a cell of a notebook, whose loop is running
    attempt("complete", lambda: yard.complete("steady", "hi"))
    attempt("stream", lambda: list(yard.stream("steady", "hi")))
    attempt("embed", lambda: yard.embed("grams", "hi"))
    print("from a thread:", (await asyncio.to_thread(yard.complete, "steady", "hi")).text)
    yard.close()

asyncio.run(notebook())
attempt("after close", lambda: yard.complete("steady", "hi"))
attempt("stream after close", lambda: list(yard.stream("steady", "hi")))
"""


def run_in_dev_mode(script: str) -> subprocess.CompletedProcess[str]:
    """Run `script` in a Python of its own in development mode (never-awaited coroutines and
    unclosed resources warn on stderr); assert it succeeded."""
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done


def test_sync_facade_misused_says_what_to_do_and_leaks_nothing(
    write_config: Callable[[str], Path],
) -> None:
    """Inside a running loop (a notebook) a SyncYard raised asyncio's 'Cannot run the event loop
    while another loop is running' and left 'coroutine ... was never awaited' and 'Task was
    destroyed but it is pending!' behind; its close() there closed nothing (an unclosed event
    loop and sockets); after close it raised 'Event loop is closed'. Each now says what to do,
    close() closes wherever it is called, and nothing is left unclosed or unawaited."""
    config = write_config(CONFIG + "embedders:\n  grams: {local: {type: hashing}}\n")
    done = run_in_dev_mode(SYNC_MISUSE.format(config=str(config)))
    inside = (
        "RuntimeError: SyncYard.{} cannot run inside a running event loop (a notebook, an "
        "async function): await the Yard's own {} there (modelyard.load), or call it from "
        "another thread"
    )
    closed = f"YardClosedError: the yard of {config} is closed: load the config again"
    lines = done.stdout.splitlines()
    assert lines[0] == "steady answer"
    assert lines[1] == "complete: " + inside.format("complete", "complete")
    assert lines[2] == "stream: " + inside.format("stream", "stream")
    assert lines[3] == "embed: " + inside.format("embed", "embed")
    assert lines[4] == "from a thread: steady answer"
    assert lines[5].startswith("after close: " + closed)
    assert lines[6].startswith("stream after close: " + closed)
    for leak in ("never awaited", "Task was destroyed", "unclosed", "collected inside"):
        assert leak not in done.stderr, done.stderr
    costs = CliRunner().invoke(app, ["costs", str(config)], env={"COLUMNS": "200"})
    assert "│        2 │" in costs.stdout, costs.stdout  # close() in the loop wrote the ledger


async def test_a_deadline_given_in_seconds_is_told_it_is_a_monotonic_instant(
    write_config: Callable[[str], Path],
) -> None:
    """`deadline=5` reads as 'five seconds', but a deadline is a time.monotonic() instant, long
    past: the call failed with only 'the request's deadline passed before the call started'.
    It still fails as a timeout, now saying what a deadline is and how long ago this one was."""
    async with modelyard.load(write_config(CONFIG)) as yard:
        with pytest.raises(ModelTimeoutError) as caught:
            await yard.complete("main", "hi", deadline=5)
        assert (await yard.complete("main", "hi", deadline=time.monotonic() + 5)).text
    message = str(caught.value)
    assert re.search(r"deadline 5 passed [0-9.]+ s before the call to main started", message)
    assert "a time.monotonic() instant, not seconds from now" in message
    assert "time.monotonic() + 5 is 5 s from now" in message
    assert caught.value.code == "deadline" and caught.value.model == "main"


SYNC_THREADS = """
import threading, modelyard
from concurrent.futures import ThreadPoolExecutor

meeting = threading.Barrier(8, timeout=60)

def meet(request):  # answers once all 8 threads' calls are in: they run at the same time
    meeting.wait()
    return request.last_user_text.upper()

yard = modelyard.load_sync({config!r})

def work(i):
    answers = [yard.complete("fn", f"thread {{i}} call {{j}}").text for j in range(3)]
    answers.append(list(yard.stream("fn", f"thread {{i}} stream"))[-1].response.text)
    answers.append(str(len(yard.embed("grams", f"thread {{i}}").vectors)))
    return " | ".join(answers)

with ThreadPoolExecutor(8) as pool:
    for answers in pool.map(work, range(8)):
        print(answers)

def attempt(what):
    try:
        yard.complete("fn", "hi")
    except Exception as exc:
        print(f"{{what}}: {{type(exc).__name__}}: {{exc}}")

closer = threading.Thread(target=yard.close)
closer.start()
closer.join()
attempt("after close")
after = threading.Thread(target=attempt, args=("after close, from a thread",))
after.start()
after.join()
yard.close()  # again, from another thread than the one that closed it: nothing to do
"""


def test_sync_facade_is_shared_by_threads_whose_calls_run_at_once(
    write_config: Callable[[str], Path],
) -> None:
    """A web app serving requests from a pool of threads shares one SyncYard. Its one private
    loop could not be run by two threads at once ('This event loop is already running'). Now
    8 threads' calls run at the same time (the function model answers only when all 8 are in),
    each gets its own answer, close() from another thread closes it and writes the ledger, and
    calls after it, from any thread, say the yard is closed."""
    config = write_config(
        "models:\n"
        "  fn:\n"
        "    local: {type: callable, function: '__main__:meet'}\n"
        "    price: {input: 1.0, output: 1.0}\n"
        "embedders:\n"
        "  grams: {local: {type: hashing}}\n"
    )
    done = run_in_dev_mode(SYNC_THREADS.format(config=str(config)))
    lines = done.stdout.splitlines()
    assert lines[:8] == [
        f"THREAD {i} CALL 0 | THREAD {i} CALL 1 | THREAD {i} CALL 2 | THREAD {i} STREAM | 1"
        for i in range(8)
    ]
    closed = f"YardClosedError: the yard of {config} is closed: load the config again"
    assert lines[8].startswith("after close: " + closed)
    assert lines[9].startswith("after close, from a thread: " + closed)
    assert len(lines) == 10
    for leak in ("Warning", "never awaited", "Task was destroyed", "unclosed", "Traceback"):
        assert leak not in done.stderr, done.stderr
    costs = CliRunner().invoke(app, ["costs", str(config)], env={"COLUMNS": "200"})
    assert "│       32 │" in costs.stdout, costs.stdout  # every call, in the ledger at close


ENTERED = threading.Semaphore(0)
RELEASED = threading.Event()


def held(request: ChatRequest) -> str:
    """A function model that answers only once the test releases it."""
    ENTERED.release()
    RELEASED.wait(60)
    return "late"


def test_sync_facade_closed_from_a_thread_while_others_wait_tells_them_it_is_closed(
    write_config: Callable[[str], Path],
) -> None:
    """Calls of other threads still waiting when one thread closes the SyncYard are cancelled
    and raise YardClosedError: none waits for good on a loop that has stopped."""
    config = write_config(
        "models:\n  fn: {local: {type: callable, function: tests.test_yard:held}}\n"
    )
    yard = modelyard.load_sync(config)
    RELEASED.clear()
    try:
        with ThreadPoolExecutor(5) as pool:  # 4 callers, and 1 that closes
            calls = [pool.submit(yard.complete, "fn", "hi") for _ in range(4)]
            for _ in calls:
                assert ENTERED.acquire(timeout=60)
            pool.submit(yard.close).result(timeout=60)
            for call in calls:
                with pytest.raises(modelyard.YardClosedError):
                    call.result(timeout=60)
    finally:
        RELEASED.set()
    assert not yard._runner.thread.is_alive()
