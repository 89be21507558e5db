"""The replay model: recorded answers, usage and cost; clear errors for what is not recorded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import modelyard
from modelyard.errors import ConfigError, NotFoundError
from modelyard.evaluation import replay as replay_module
from modelyard.evaluation.formats import load_recordings
from modelyard.evaluation.replay import RECORDED_SCORE
from modelyard.types import ChatRequest, Message
from tests.evaluation.conftest import write_jsonl

ARC = "routerbench-train/arc_challenge_train.csv"
GSM8K = "routellm/gsm8k/gsm8k_responses.csv"
ARC_PROMPT_START = "George wants to warm his hands quickly by rubbing them."


def _prompt(path: Path, fmt: str) -> str:
    return load_recordings(fmt, [path]).items[0].prompt


def _config(path: Path, fmt: str, model: str, extra: str = "") -> str:
    return f"""
models:
  replayed:
    local: {{type: replay, data: "{path}", format: {fmt}, model: "{model}"}}
{extra}"""


@pytest.fixture
def arc(sliced: Callable[[str, int], Path]) -> Path:
    return sliced(ARC, 5)


async def test_replay_answers_with_the_recorded_text_cost_and_score(
    arc: Path, write_config: Callable[[str], Path]
) -> None:
    config = write_config(_config(arc, "routerbench", "claude-instant-v1"))
    async with modelyard.load(config) as yard:
        response = await yard.complete("replayed", _prompt(arc, "routerbench"))
    assert response.text == "A"
    assert response.cost == pytest.approx(0.0004264)
    assert response.provider_model == "claude-instant-v1"
    assert response.decision is not None
    assert response.decision.details[RECORDED_SCORE] == 0.0


async def test_replay_matches_after_whitespace_normalisation(
    arc: Path, write_config: Callable[[str], Path]
) -> None:
    async with modelyard.load(write_config(_config(arc, "routerbench", "claude-v1"))) as yard:
        messy = "  " + _prompt(arc, "routerbench").replace("\n", " \n\n  ") + "\n"
        response = await yard.complete("replayed", messy)
    assert response.text == "D"


async def test_replay_looks_at_the_last_user_message(
    arc: Path, write_config: Callable[[str], Path]
) -> None:
    async with modelyard.load(write_config(_config(arc, "routerbench", "claude-v1"))) as yard:
        prompt = _prompt(arc, "routerbench")
        request = ChatRequest(
            messages=(
                Message(role="user", content="earlier turn"),
                Message(role="assistant", content="ok"),
                Message(role="user", content=prompt),
            )
        )
        response = await yard.get("replayed").complete(request)
    assert response.text == "D"


async def test_cost_without_recorded_cost_comes_from_list_prices_and_estimated_tokens(
    sliced: Callable[[str, int], Path], write_config: Callable[[str], Path]
) -> None:
    path = sliced(GSM8K, 3)
    config = write_config(_config(path, "routellm-gsm8k", "gpt-4-1106-preview"))
    async with modelyard.load(config) as yard:
        response = await yard.complete("replayed", _prompt(path, "routellm-gsm8k"))
    usage = response.usage
    assert usage.estimated and usage.input_tokens > 0 and usage.output_tokens > 0
    expected = (usage.input_tokens * 10.0 + usage.output_tokens * 30.0) / 1e6
    assert response.cost == pytest.approx(expected)


async def test_a_configured_price_overrides_the_list_price(
    sliced: Callable[[str, int], Path], write_config: Callable[[str], Path]
) -> None:
    path = sliced(GSM8K, 3)
    text = (
        _config(path, "routellm-gsm8k", "gpt-4-1106-preview")
        + "    price: {input: 0, output: 1000000}\n"
    )
    async with modelyard.load(write_config(text)) as yard:
        response = await yard.complete("replayed", _prompt(path, "routellm-gsm8k"))
    assert response.cost == pytest.approx(response.usage.output_tokens)


async def test_a_model_without_a_price_missing_some_recorded_costs_is_refused(
    tmp_path: Path, write_config: Callable[[str], Path]
) -> None:
    # The other answers show the model costs money: a missing cost would be counted as $0.
    header = "sample_id,prompt,eval_name,m,m|model_response,m|total_cost\n"
    path = tmp_path / "rb.csv"
    path.write_text(header + "a,['Q1'],arc,1,['A'],0.1\nb,['Q2'],arc,1,['B'],nan\n")
    with pytest.raises(ConfigError) as caught:
        modelyard.load(write_config(_config(path, "routerbench", "m")))
    message = str(caught.value)
    assert "models.replayed" in message and "'m'" in message and "item b" in message
    assert "price" in message
    priced = write_config(_config(path, "routerbench", "m", "    price: {input: 1, output: 1}\n"))
    async with modelyard.load(priced) as yard:
        response = await yard.complete("replayed", "Q2")
    assert response.cost > 0


async def test_unknown_prompt_names_the_model_and_the_prompt(
    arc: Path, write_config: Callable[[str], Path]
) -> None:
    async with modelyard.load(write_config(_config(arc, "routerbench", "claude-v1"))) as yard:
        with pytest.raises(NotFoundError) as caught:
            await yard.complete("replayed", "What is the capital of Atlantis?")
    assert caught.value.model == "replayed"
    assert "What is the capital of Atlantis?" in str(caught.value)


async def test_unknown_prompts_that_share_a_long_start_are_told_apart(
    arc: Path, write_config: Callable[[str], Path]
) -> None:
    # RouterBench's ARC prompts all open with the same few-shot examples and end with the
    # same instruction; the question asked sits between, and the error quotes it.
    recorded = _prompt(arc, "routerbench")
    examples, instruction = recorded.rindex("\n\n") + 2, recorded.rindex("Print only")
    asked = recorded[:examples] + "What is the capital of Atlantis?\n" + recorded[instruction:]
    async with modelyard.load(write_config(_config(arc, "routerbench", "claude-v1"))) as yard:
        with pytest.raises(NotFoundError) as caught:
            await yard.complete("replayed", asked)
    assert ARC_PROMPT_START[:30] not in str(caught.value)
    assert "What is the capital of Atlantis?" in str(caught.value)


async def test_the_recorded_prompts_are_read_once_for_every_prompt_missing(
    tmp_path: Path, write_config: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each miss took the shared start and end of every recorded prompt anew: 130,000 prompts
    # missing from 70,000 recorded, through a three-stage cascade, ran for hours.
    rows = [{"prompt": f"Q{n}: what is {n} + 1?", "model": "m", "response": "x"} for n in range(50)]
    path = write_jsonl(tmp_path / "rec.jsonl", rows)
    spans: list[int] = []
    shared = replay_module._shared
    monkeypatch.setattr(
        replay_module, "_shared", lambda texts: spans.append(len(texts)) or shared(texts)
    )
    async with modelyard.load(write_config(_config(path, "jsonl", "m"))) as yard:
        for n in range(5):
            with pytest.raises(NotFoundError) as caught:
                await yard.complete("replayed", f"Q{n}: what is {n} + 2?")
            assert f"what is {n} + 2?" in str(caught.value)
    assert sum(1 for n in spans if n == len(rows)) == 2  # the start and the end, once


def test_a_model_absent_from_the_recordings_lists_those_present(
    arc: Path, write_config: Callable[[str], Path]
) -> None:
    with pytest.raises(ConfigError) as caught:
        modelyard.load(write_config(_config(arc, "routerbench", "gpt-5")))
    message = str(caught.value)
    assert (
        "'gpt-5'" in message and "claude-v2" in message and "models.replayed.local.model" in message
    )


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("empty.json", "[]"),
        ("header-only.csv", "sample_id,prompt,m,m|model_response,m|total_cost\n"),
    ],
)
def test_recordings_that_hold_no_items_say_so(
    name: str, text: str, tmp_path: Path, write_config: Callable[[str], Path]
) -> None:
    path = tmp_path / name
    path.write_text(text)
    fmt = "routerdc" if name.endswith(".json") else "routerbench"
    with pytest.raises(ConfigError) as caught:
        modelyard.load(write_config(_config(path, fmt, "m")))
    assert "hold no items" in str(caught.value) and "models.replayed.local.data" in str(
        caught.value
    )


def test_missing_recordings_file_is_a_config_error_with_its_line(
    tmp_path: Path, write_config: Callable[[str], Path]
) -> None:
    with pytest.raises(ConfigError) as caught:
        modelyard.load(write_config(_config(tmp_path / "none.csv", "routerbench", "m")))
    assert caught.value.line == 4 and "not found" in str(caught.value)


def test_a_relative_recordings_path_not_found_says_it_was_read_from_the_config_s_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `ARC_RECORDINGS=unseen.csv modelyard eval bench/configs/...` looks in bench/configs/, not
    # in the working directory where unseen.csv is; the error showed only
    # "recordings not found at bench/configs/${ARC_RECORDINGS}".
    (tmp_path / "unseen.csv").write_text("sample_id,prompt,m,m|model_response,m|total_cost\n")
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "arc.yaml"
    config.write_text(_config(Path("${ARC_RECORDINGS}"), "routerbench", "m"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ARC_RECORDINGS", "unseen.csv")
    with pytest.raises(ConfigError) as caught:
        modelyard.load(Path("configs/arc.yaml"))
    message = str(caught.value)
    assert "not found at configs/${ARC_RECORDINGS}" in message
    assert "a relative path is read from the config's folder, configs" in message


def test_shared_data_reference_resolves_under_the_data_root(
    data: Path, tmp_path: Path, write_config: Callable[[str], Path]
) -> None:
    text = (
        _config(Path("x"), "routellm-mtbench", "gpt-4-1106-preview")
        .replace('"x"', '"shared:routellm/mt_bench"')
        .replace("model:", f'data_root: "{data}", model:')
    )
    yard = modelyard.load(write_config(text))
    assert "replayed" in yard.models


def _timed(tmp_path: Path, latencies: list[float | None]) -> Path:
    rows = []
    for i, latency in enumerate(latencies):
        row: dict[str, object] = {"prompt": f"Q{i}", "model": "m", "response": f"A{i}", "cost": 0}
        if latency is not None:
            row["latency_ms"] = latency
        rows.append(row)
    return write_jsonl(tmp_path / "timed.jsonl", rows)


async def test_replay_can_wait_each_answer_s_recorded_latency_scaled_else_the_latency_setting(
    tmp_path: Path, write_config: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replay answered at once whatever the recording said (`latency_ms`), so gate's latency
    rule read the replay's own microseconds; `recorded_latency: <scale>` waits the recorded
    time times the scale, and `latency:` for answers recorded without one."""
    waits: list[float] = []
    real_sleep = replay_module.asyncio.sleep

    async def sleep(seconds: float) -> None:
        waits.append(round(seconds, 6))
        await real_sleep(0)

    monkeypatch.setattr(replay_module.asyncio, "sleep", sleep)
    path = _timed(tmp_path, [2000, 300, None])
    local = f'{{type: replay, data: "{path}", format: jsonl, model: m, latency: 0.05, '
    config = write_config(f"models:\n  r:\n    local: {local}recorded_latency: 0.1}}\n")
    async with modelyard.load(config) as yard:
        for i in range(3):
            response = await yard.complete("r", f"Q{i}")
            assert response.text == f"A{i}"
        assert waits == [0.2, 0.03, 0.05]
        with pytest.raises(modelyard.ModelTimeoutError, match="deadline"):
            await yard.complete("r", "Q0", deadline=0.1)  # 0.2 s needed
    waits.clear()
    plain = write_config(f"models:\n  r:\n    local: {local[:-2]}}}\n", name="plain.yaml")
    async with modelyard.load(plain) as yard:
        await yard.complete("r", "Q0")
    assert waits == [0.05]  # as before: the latency setting, recorded times left unread


def test_recorded_latency_asked_of_recordings_without_any_is_a_config_error(
    tmp_path: Path, write_config: Callable[[str], Path]
) -> None:
    path = _timed(tmp_path, [None, None])
    local = f'{{type: replay, data: "{path}", format: jsonl, model: m, recorded_latency: 1}}'
    with pytest.raises(ConfigError) as caught:
        modelyard.load(write_config(f"models:\n  r:\n    local: {local}\n"))
    message = str(caught.value)
    assert "models.r" in message and "recorded_latency" in message and "latency_ms" in message
