"""The load and cost test: requests leave on schedule (open loop), the run's own limits hold,
spend is counted per billed model and projected against the config's budgets."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelyard.cli import app
from modelyard.config.loader import load_config
from modelyard.cost.bounds import cost_bound
from modelyard.errors import RateLimitedError
from modelyard.evaluation.isolation import load_for_evaluation
from modelyard.model import Model, Wrapper
from modelyard.resilience.load import project, run_load
from modelyard.types import ChatRequest, ChatResponse, user
from tests.resilience.test_drill import ONE_PROVIDER

Write = Callable[[str], Path]

SYSTEM = """
models:
  flaky:
    local: {type: fake, default: {error: unavailable}}
  steady:
    local: {type: fake, default: {text: "fine", latency: LATENCY}}
    price: {input: 1.0, output: 2.0}
systems:
  main: {type: fallback, chain: [flaky, steady]}
  other: {type: fallback, chain: [steady]}
budgets:
  - {name: monthly, scope: total, window: month, limit: 100}
  - {name: main-day, scope: system, selector: main, window: day, limit: 1}
  - {name: steady-hour, scope: model, selector: steady, window: hour, limit: 0.01}
  - {name: other-system, scope: system, selector: other, window: day, limit: 1}
  - {name: per-key, scope: key, selector: "*", window: day, limit: 1}
  - {name: launch, scope: total, window: fixed, start: 2026-01-01, end: 2026-02-01, limit: 5}
"""


def _system(latency: float) -> str:
    return SYSTEM.replace("LATENCY", str(latency))


def _requests() -> list[ChatRequest]:
    # One output token: a request's worst case is about three times its cost, so a run capped
    # at a few of its answers can send it (a prompt not yet answered counts at its worst case).
    return [user("hello there", max_tokens=1), user("hi", max_tokens=1)]


async def test_requests_leave_on_schedule_while_earlier_ones_still_wait(
    write_config: Write,
) -> None:
    # 20 requests at 50/s to a system that takes 0.3 s: sent on schedule they all finish in
    # about 0.7 s; one waiting for the other (a closed loop of one) would take 6 s.
    async with load_for_evaluation(write_config(_system(0.3))) as yard:
        report = await run_load(yard.get("main"), _requests(), rate=50, total=20)
    assert report.sent == 20 and report.stopped == "requests" and report.shed == 0
    assert report.seconds < 3
    assert report.latency(50) >= 290
    assert report.answered_by == {"steady": 20} and not report.errors


async def test_a_duration_sends_what_is_scheduled_before_it_ends(write_config: Write) -> None:
    # 1.2 s at 10/s: sent at 0.0, 0.1, ..., 1.1 s; the one due at 1.2 s is past the end.
    async with load_for_evaluation(write_config(_system(0.0))) as yard:
        report = await run_load(yard.get("main"), _requests(), rate=10, duration=1.2)
    assert report.sent == 12 and report.stopped == "duration"


class Blocking(Wrapper):
    """Holds the event loop for `seconds` before each call, as CPU-bound work in the process
    sending the load does."""

    def __init__(self, inner: Model, seconds: float) -> None:
        super().__init__(inner)
        self.seconds = seconds

    async def complete(self, request: ChatRequest) -> ChatResponse:
        time.sleep(self.seconds)  # noqa: ASYNC251 - holding the loop is the point
        return await self.inner.complete(request)


async def test_sending_late_because_the_loop_is_busy_is_reported(write_config: Write) -> None:
    # 100/s, but each call holds the loop 30 ms: sends fall further and further behind.
    async with load_for_evaluation(write_config(_system(0.0))) as yard:
        blocked = Blocking(yard.get("main"), 0.03)
        report = await run_load(blocked, _requests(), rate=100, total=20)
    assert report.late(100) > 200
    assert report.to_dict()["late_ms"]["p100"] == pytest.approx(report.late(100), abs=1e-3)


async def test_the_run_sheds_what_exceeds_its_in_flight_limit(write_config: Write) -> None:
    async with load_for_evaluation(write_config(_system(0.5))) as yard:
        report = await run_load(yard.get("main"), _requests(), rate=200, total=40, max_in_flight=5)
    assert report.shed > 0 and report.sent + report.shed == 40


async def test_sending_stops_once_the_spend_cap_is_reached(write_config: Write) -> None:
    async with load_for_evaluation(write_config(_system(0.0))) as yard:
        report = await run_load(yard.get("main"), _requests(), rate=500, total=1000, max_cost=1e-4)
    assert report.stopped == "max_cost" and report.sent < 1000
    # It stops at the last request that fits: one more would have passed the cap.
    assert 1e-4 - report.cost_per_request < report.cost <= 1e-4


WORDY = """
models:
  wordy:
    local: {type: fake, default: "WORDS"}
    price: {input: 1.0, output: 2.0}
"""


async def test_prompts_never_answered_before_do_not_take_the_run_past_its_spend_cap(
    write_config: Write,
) -> None:
    # Every prompt is new (a labelled set sent once) and costs about its worst case: each one
    # sent whenever nothing else was out, the run passed --max-cost by a request (measured on
    # the gateway's fakes: $0.050280 spent under --max-cost 0.05).
    prompts = [user(f"question {i}", max_tokens=50) for i in range(20)]
    async with load_for_evaluation(write_config(WORDY.replace("WORDS", "word " * 200))) as yard:
        one = await run_load(yard.get("wordy"), prompts[:1], rate=1, total=1)
        cap = one.cost * 2.5
        report = await run_load(yard.get("wordy"), prompts, rate=1000, total=20, max_cost=cap)
    assert report.stopped == "max_cost" and report.sent == 2
    assert report.cost <= cap


async def test_a_slow_system_at_a_high_rate_does_not_overshoot_the_spend_cap(
    write_config: Write,
) -> None:
    # At 100/s into a system taking 0.3 s, some 30 requests are out before any answers: sending
    # blindly, the run spent nearly three times its cap.
    async with load_for_evaluation(write_config(_system(0.3))) as yard:
        one = await run_load(yard.get("main"), _requests()[:1], rate=1, total=1)
        cap = one.cost * 10.5
        report = await run_load(
            yard.get("main"), _requests()[:1], rate=100, total=200, max_cost=cap
        )
    assert report.stopped == "max_cost" and cap - one.cost <= report.cost <= cap
    # Waiting for the cap is the run's doing, not the system's: latency starts at release.
    assert max(s.latency_ms for s in report.samples) < 500


async def test_before_any_answer_each_request_out_counts_at_its_own_prompts_worst_case(
    write_config: Write,
) -> None:
    # The first prompt is short, the second long. Counted at the first one's worst case (and,
    # once it answered, at the run's mean), the long requests left by the dozen and passed the
    # cap; each now counts at its own worst case until it answered once.
    prompts = [user("hi"), user("word " * 4000)]
    async with load_for_evaluation(write_config(_system(0.5))) as yard:
        system = yard.get("main")
        cap = cost_bound(system, prompts[1]) * 1.5
        report = await run_load(system, prompts, rate=100, total=200, max_cost=cap)
    assert report.stopped == "max_cost" and report.cost <= cap


class RefusedAtFirst(Wrapper):
    """Refuses its first `refusals` calls at once, at no cost (a provider's 429 while it warms
    up), then answers as `inner` does."""

    def __init__(self, inner: Model, refusals: int) -> None:
        super().__init__(inner)
        self.refusals = refusals

    async def complete(self, request: ChatRequest) -> ChatResponse:
        if self.refusals > 0:
            self.refusals -= 1
            raise RateLimitedError("slow down", model=self.name)
        return await self.inner.complete(request)


async def test_free_failures_do_not_make_requests_still_out_look_free(
    write_config: Write,
) -> None:
    # The first two requests are refused at once for nothing: a mean of $0 so far says nothing
    # of what the requests sent after them will cost once the system answers (0.3 s later, some
    # 30 of them at 100/s).
    async with load_for_evaluation(write_config(_system(0.3))) as yard:
        one = await run_load(yard.get("main"), _requests()[:1], rate=1, total=1)
        cap = one.cost * 10.5
        system = RefusedAtFirst(yard.get("main"), 2)
        report = await run_load(system, _requests()[:1], rate=100, total=200, max_cost=cap)
    assert report.errors == {"rate_limited": 2}
    assert report.stopped == "max_cost" and report.cost <= cap


async def test_waiting_for_answers_near_the_cap_sends_nothing_after_the_duration(
    write_config: Write,
) -> None:
    # Until the first answer (0.5 s) a request out counts at its worst case, which this cap
    # holds one of: the send due at 0.1 s waits for it. By then the 0.3 s run is over.
    async with load_for_evaluation(write_config(_system(0.5))) as yard:
        bound = cost_bound(yard.get("main"), _requests()[0])
        report = await run_load(
            yard.get("main"), _requests()[:1], rate=10, duration=0.3, max_cost=bound * 1.5
        )
    assert report.sent == 1 and report.stopped == "duration"


async def test_nothing_is_sent_once_the_spend_cap_was_reached_before_its_send_time(
    write_config: Write,
) -> None:
    # 2/s to an instant system: the first answer, in well before the second send is due,
    # leaves less of the cap than the next prompt's worst case, and the run ends then.
    prompts = [user(f"question {i}", max_tokens=50) for i in range(20)]
    async with load_for_evaluation(write_config(WORDY.replace("WORDS", "word " * 200))) as yard:
        one = await run_load(yard.get("wordy"), prompts[:1], rate=1, total=1)
        cap = one.cost * 1.5
        report = await run_load(yard.get("wordy"), prompts, rate=2, total=20, max_cost=cap)
    assert report.stopped == "max_cost" and report.sent == 1
    assert report.seconds < 0.25  # to the last answer, not the end of the 0.5 s wait for the next


async def test_spend_is_split_by_billed_model_and_projected_to_the_budgets_that_count_it(
    write_config: Write,
) -> None:
    path = write_config(_system(0.0))
    async with load_for_evaluation(path) as yard:
        report = await run_load(yard.get("main"), _requests(), rate=1000, total=10)
    each = report.cost_per_request
    assert each > 0 and report.billed.keys() == {"flaky", "steady"}
    assert report.billed["steady"] == pytest.approx(report.cost)
    found = {p.budget: p for p in project(report, load_config(path).config.budgets, daily=2400)}
    # Key budgets and fixed windows are not projected; another system's budget does not count.
    assert found.keys() == {"monthly", "main-day", "steady-hour"}
    assert found["monthly"].projected == pytest.approx(each * 2400 * 30)
    assert found["main-day"].projected == pytest.approx(each * 2400)
    assert found["steady-hour"].projected == pytest.approx(report.billed["steady"] / 10 * 100)
    assert found["main-day"].share == pytest.approx(each * 2400 / 1)
    # A short window is also held against the run's own rate (1,000/s), not just the average.
    steady_each = report.billed["steady"] / 10
    assert found["steady-hour"].at_rate == pytest.approx(steady_each * 1000 * 3600)
    assert found["main-day"].at_rate is None


async def test_failures_are_counted_by_kind(write_config: Write) -> None:
    async with load_for_evaluation(write_config(_system(0.0))) as yard:
        report = await run_load(yard.get("flaky"), _requests(), rate=1000, total=6)
    assert report.errors == {"unavailable": 6} and not report.answered_by


async def test_throughput_counts_answers_not_failures(write_config: Write) -> None:
    async with load_for_evaluation(write_config(_system(0.0))) as yard:
        report = await run_load(yard.get("flaky"), _requests(), rate=100, total=6)
    assert report.to_dict()["throughput"] == 0.0


def _labelled(tmp_path: Path) -> Path:
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"prompt": "hello", "label": "x"}\n{"prompt": "bye", "label": "y"}\n')
    return data


def test_the_command_prints_json_with_the_budgets_projected(
    write_config: Write, tmp_path: Path
) -> None:
    config = write_config(_system(0.0))
    args = ["load", str(config), "main", "--data", str(_labelled(tmp_path)), "--rate", "200"]
    result = CliRunner().invoke(app, [*args, "--requests", "20", "--daily", "1000", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["sent"] == 20 and out["daily"] == 1000 and out["errors"] == {}
    assert {p["budget"] for p in out["projections"]} == {"monthly", "main-day", "steady-hour"}
    # Off production's books: the run charged no budget and wrote no ledger.
    assert not (config.parent / ".modelyard").exists()


def test_a_system_reaching_a_hosted_provider_needs_a_spend_cap(
    write_config: Write, tmp_path: Path
) -> None:
    args = ["load", str(write_config(ONE_PROVIDER)), "main", "--data", str(_labelled(tmp_path))]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "alpha: a1" in result.output and "--max-cost" in result.output


def test_the_default_deadline_runs_from_each_send_not_from_the_start_of_the_run(
    write_config: Write, tmp_path: Path
) -> None:
    # Each request takes 0.1 s of a 0.4 s deadline; the run lasts 1.2 s. A deadline fixed when
    # the prompts were read would have passed for every request sent after 0.4 s.
    config = write_config(_system(0.1) + "default_deadline: 0.4\n")
    args = ["load", str(config), "other", "--data", str(_labelled(tmp_path)), "--rate", "10"]
    result = CliRunner().invoke(app, [*args, "--duration", "1.2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["errors"] == {}


def test_a_number_of_requests_and_a_duration_are_not_both_given(
    write_config: Write, tmp_path: Path
) -> None:
    args = ["load", str(write_config(_system(0.0))), "main", "--data", str(_labelled(tmp_path))]
    result = CliRunner().invoke(app, [*args, "--requests", "5", "--duration", "1"])
    assert result.exit_code == 2
    assert "--requests" in result.output and "--duration" in result.output
    result = CliRunner().invoke(app, [*args, "--max-cost", "0"])
    assert result.exit_code == 2 and "--max-cost must be more than 0" in result.output


def test_a_small_projected_spend_is_printed_with_its_digits(
    write_config: Write, tmp_path: Path
) -> None:
    # A few thousandths of a dollar an hour against a $0.01 hourly budget is a real share of
    # it: "$0.00 an hour, 40%" would contradict itself.
    config = write_config(_system(0.0))
    args = ["load", str(config), "main", "--data", str(_labelled(tmp_path)), "--rate", "200"]
    result = CliRunner().invoke(app, [*args, "--requests", "10", "--daily", "1000"])
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.output.splitlines() if "budget steady-hour" in line]
    assert "$0.00 " not in line


def test_the_command_reads_the_config_once(
    write_config: Write, tmp_path: Path, parsed: list[str]
) -> None:
    # Budgets and systems come from one reading of the file, never from two that could differ.
    config = write_config(_system(0.0))
    args = ["load", str(config), "main", "--data", str(_labelled(tmp_path)), "--rate", "200"]
    result = CliRunner().invoke(app, [*args, "--requests", "5", "--json"])
    assert result.exit_code == 0, result.output
    assert len(parsed) == 1


def test_a_spend_cap_below_one_requests_worst_case_says_so_and_what_it_is(
    write_config: Write, tmp_path: Path
) -> None:
    # A run never passes its cap, so it cannot send a request that may cost more: it says
    # what that request may cost instead of printing an empty report.
    config = write_config(_system(0.0))
    args = ["load", str(config), "main", "--data", str(_labelled(tmp_path)), "--max-cost", "1e-9"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    bound = cost_bound(load_for_evaluation(config).get("main"), user("hello"))
    said = " ".join(result.output.split())
    assert "--max-cost 1e-09 does not cover one request" in said and f"${bound:.6f}" in said


def test_a_run_where_nothing_was_answered_says_its_cost_figures_measure_nothing(
    write_config: Write, tmp_path: Path
) -> None:
    # Every request failed for free: "$0.00 a day, 0%" of each budget would read as a cheap
    # system, not as one that never answered.
    config = write_config(_system(0.0))
    args = ["load", str(config), "flaky", "--data", str(_labelled(tmp_path)), "--rate", "200"]
    result = CliRunner().invoke(app, [*args, "--requests", "4"], env={"COLUMNS": "200"})
    # Exit 1, after the report: a script gating on the run must not read it as a pass.
    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())
    assert "nothing was answered: the cost and the budget projections below count no answer" in said
    result = CliRunner().invoke(app, [*args, "--requests", "4", "--json"])
    assert result.exit_code == 1 and json.loads(result.output)["errors"] == {"unavailable": 4}
