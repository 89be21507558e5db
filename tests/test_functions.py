"""Users' functions named in config (`module:function`): what a user is told when the module
cannot be imported, and that a synchronous one does not hold the event loop."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import modelyard
from modelyard.errors import BadResponseError, ConfigError, ModelTimeoutError
from modelyard.functions import FunctionThreads, call_function, import_function
from modelyard.streaming import collect


def test_a_module_not_on_the_python_path_is_named_with_how_to_put_it_there() -> None:
    # The `modelyard` console script does not import from the config's folder or the working
    # directory, so a module beside the config is not found: the error says where to put it.
    with pytest.raises(ConfigError) as caught:
        import_function("nowhere_qa_x:answer")
    message = str(caught.value)
    assert "cannot import module 'nowhere_qa_x' for 'nowhere_qa_x:answer'" in message
    assert "PYTHONPATH" in message


def test_a_module_that_fails_to_import_names_its_own_missing_dependency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "needs_more_qa.py").write_text("import not_installed_qa_y\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        import_function("needs_more_qa:answer")
    message = str(caught.value)
    assert "No module named 'not_installed_qa_y'" in message
    assert "PYTHONPATH" not in message  # the module was found: the path is not what is wrong


async def test_a_synchronous_function_runs_off_the_event_loop() -> None:
    # It waits for an event the loop sets: on the loop itself it would wait its whole timeout,
    # since nothing else runs until it returns (a gateway's every other request held too).
    released = threading.Event()

    def waits(label: str) -> str:
        return label if released.wait(timeout=10) else "the loop was held"

    call = asyncio.ensure_future(call_function(waits, "ran beside the loop"))
    await asyncio.sleep(0)
    released.set()
    assert await call == "ran beside the loop"


async def test_hung_functions_leave_the_loops_own_threads_free() -> None:
    # asyncio's default pool (6 threads on 2 cores) also resolves provider host names and serves
    # key lookups: abandoned functions still running in it used to stall all of that.
    released = threading.Event()

    def hangs() -> None:
        released.wait(timeout=10)

    loop = asyncio.get_running_loop()
    default_threads = min(32, (os.cpu_count() or 1) + 4)
    hung = [asyncio.ensure_future(call_function(hangs)) for _ in range(default_threads + 2)]
    try:
        await asyncio.sleep(0.05)
        resolved = await asyncio.wait_for(loop.getaddrinfo("127.0.0.1", 80), timeout=5)
        assert resolved  # answered while every hung function still runs
        assert not any(call.done() for call in hung)
    finally:
        released.set()
        await asyncio.gather(*hung)


async def test_async_functions_and_async_callable_objects_are_awaited() -> None:
    async def answer(x: int) -> int:
        return x + 1

    class Doubler:
        async def __call__(self, x: int) -> int:
            return 2 * x

    assert await call_function(answer, 1) == 2
    assert await call_function(Doubler(), 4) == 8


SYNC_MODULE = """
import threading
released = threading.Event()

def waits(request):
    return "answered" if released.wait(timeout=10) else "the loop was held"
"""


async def test_a_synchronous_callable_model_is_cut_at_the_deadline_and_holds_no_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_config: Callable[[str], Path]
) -> None:
    (tmp_path / "sync_waits_qa.py").write_text(SYNC_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    import sync_waits_qa  # type: ignore[import-not-found]

    text = "models:\n  slow:\n    local: {type: callable, function: 'sync_waits_qa:waits'}\n"
    async with modelyard.load(write_config(text)) as yard:
        try:
            # Under a deadline it is abandoned there, as an async function is (it used to
            # answer when it returned, however late, holding every other request meanwhile).
            with pytest.raises(ModelTimeoutError):
                await yard.complete("slow", "hi", deadline=time.monotonic() + 0.3)
            sync_waits_qa.released.clear()
            call = asyncio.ensure_future(yard.complete("slow", "hi"))
            await asyncio.sleep(0.05)  # the loop runs while it waits, so it can be released
            sync_waits_qa.released.set()
            assert (await call).text == "answered"
        finally:
            sync_waits_qa.released.set()  # no thread left waiting when the test ends


COUNTING_MODULE = """
import threading
released = threading.Event()
started = threading.Semaphore(0)
running = set()

def waits(request):
    running.add(threading.current_thread().name)
    started.release()
    released.wait(timeout=10)
    return "answered"
"""


async def test_the_functions_pool_takes_its_size_from_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_config: Callable[[str], Path]
) -> None:
    (tmp_path / "sync_counts_qa.py").write_text(COUNTING_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    import sync_counts_qa  # type: ignore[import-not-found]

    text = (
        "functions: {threads: 2}\n"
        "models:\n  slow:\n    local: {type: callable, function: 'sync_counts_qa:waits'}\n"
    )
    async with modelyard.load(write_config(text)) as yard:
        calls = [asyncio.ensure_future(yard.complete("slow", "hi")) for _ in range(5)]
        try:
            for _ in range(2):
                assert await asyncio.to_thread(sync_counts_qa.started.acquire, True, 10)
            await asyncio.sleep(0.2)  # time for more threads to start, were there any
            assert len(sync_counts_qa.running) == 2  # the other three wait their turn
        finally:
            sync_counts_qa.released.set()
        assert [r.text for r in await asyncio.gather(*calls)] == ["answered"] * 5
    assert len(sync_counts_qa.running) == 2


def test_the_functions_pool_keeps_32_threads_by_default() -> None:
    assert FunctionThreads().size == 32


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "users' functions need at least one thread"),
        ("2.5", "valid integer"),
        ("100000", "at most 1024"),
    ],
)
def test_a_functions_pool_size_that_cannot_work_is_refused_where_it_is(
    write_config: Callable[[str], Path], value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        modelyard.load(write_config(f"functions: {{threads: {value}}}\n"))
    assert message in str(caught.value)
    assert "functions.threads" in str(caught.value)


FAULTY_MODULE = """
def fails(request):
    raise ValueError("the orders database is down")

async def afails(request):
    raise ValueError("the orders database is down")

def wrong(request):
    return 42

async def awrong(request):
    return {"text": "hi"}
"""


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("fails", "raised ValueError: the orders database is down"),
        ("afails", "raised ValueError: the orders database is down"),
        ("wrong", "returned int; expected str or ChatResponse"),
        ("awrong", "returned dict; expected str or ChatResponse"),
    ],
)
async def test_a_function_model_that_fails_names_the_function_in_its_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    write_config: Callable[[str], Path],
    function: str,
    message: str,
) -> None:
    """The error said only 'desk: function raised ValueError: ...': with several models on
    functions, which function was at fault had to be looked up in the config."""
    (tmp_path / "faulty_qa.py").write_text(FAULTY_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = f"models:\n  desk:\n    local: {{type: callable, function: 'faulty_qa:{function}'}}\n"
    async with modelyard.load(write_config(text)) as yard:
        with pytest.raises(BadResponseError) as caught:
            await yard.complete("desk", "hi")
        with pytest.raises(BadResponseError) as streamed:
            await collect(yard.stream("desk", "hi"))
    expected = f"desk: function faulty_qa:{function} {message}"
    assert str(caught.value).startswith(expected)
    assert str(streamed.value).startswith(expected)
    assert caught.value.model == "desk" and not caught.value.retryable
