"""Running a system over items: what reaches the system, counting outcomes, node statistics."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import modelyard
from modelyard.errors import ConfigError
from modelyard.evaluation.dataset import Item, ItemSource, holdout, load_labelled, select_split
from modelyard.evaluation.evaluate import evaluate, leaf_models
from modelyard.evaluation.runner import AHEAD, ItemResult
from modelyard.evaluation.scorers import CallableScorer, make_scorer
from tests.evaluation import spy
from tests.evaluation.conftest import write_jsonl

CONFIG = """
models:
  spy:
    local: {type: callable, function: "tests.evaluation.spy:echo_length"}
  broken:
    local: {type: fake, default: {error: unavailable}}
  steady:
    local: {type: fake, default: "B"}
    price: {input: 1000000, output: 0}
systems:
  main: {type: fallback, chain: [broken, steady]}
"""


def _items(n: int, label: str = "B") -> list[Item]:
    return [Item(id=str(i), prompt=f"question {i}" + "?" * i, label=label) for i in range(n)]


async def test_the_system_never_receives_the_label(write_config: Callable[[str], Path]) -> None:
    spy.SEEN.clear()
    items = [Item(id=str(i), prompt=f"q{i}", label=f"SECRET-{i}") for i in range(5)]
    async with modelyard.load(write_config(CONFIG)) as yard:
        await evaluate(yard, "spy", items, make_scorer("exact"))
    assert len(spy.SEEN) == 5
    assert not any("SECRET" in repr(request) for request in spy.SEEN)


async def test_report_counts_accuracy_cost_and_the_fallbacks_choices(
    write_config: Callable[[str], Path],
) -> None:
    async with modelyard.load(write_config(CONFIG)) as yard:
        evaluation = await evaluate(yard, "main", _items(4), make_scorer("choice"))
    report = evaluation.report
    assert report.accuracy == 1.0 and report.scored == 4
    assert report.answered_by == {"steady": 4}
    assert report.nodes["main"].chosen == {"steady": 4}
    assert report.total_cost > 0 and report.cost_per_item == pytest.approx(report.total_cost / 4)


HALF_LABELLED = """
models:
  patchy:
    local: {type: fake, answers: {"unlabelled": {error: unavailable}}, default: "B"}
systems:
  main: {type: fallback, chain: [patchy]}
"""


async def test_a_failed_item_without_a_label_is_left_out_of_accuracy(
    write_config: Callable[[str], Path],
) -> None:
    # Answered, it would be unlabelled and left out; failing must not make it count as wrong.
    items = [Item(id="1", prompt="labelled", label="B"), Item(id="2", prompt="unlabelled")]
    async with modelyard.load(write_config(HALF_LABELLED)) as yard:
        evaluation = await evaluate(yard, "main", items, make_scorer("choice"))
    report = evaluation.report
    assert report.failed == 1 and report.scored == 1
    assert report.accuracy == 1.0


COMPOSED = """
models:
  broken:
    local: {type: fake, default: {error: unavailable}}
  a:
    local: {type: fake, default: "A"}
  b:
    local: {type: fake, default: "B"}
systems:
  shared: {type: fallback, chain: [broken, a]}
  left: {type: fallback, chain: [{type: fallback, name: inner, chain: [broken, a]}]}
  right: {type: fallback, chain: [{type: fallback, name: inner, chain: [b]}, shared]}
  main: {type: ensemble, members: [left, right, shared]}
"""


async def test_report_keeps_apart_nodes_of_one_name_in_different_places(
    write_config: Callable[[str], Path],
) -> None:
    async with modelyard.load(write_config(COMPOSED)) as yard:
        evaluation = await evaluate(yard, "main", _items(3), make_scorer("choice"))
    nodes = evaluation.report.nodes
    # Two systems' inline nodes called `inner`, and system `shared` used at the top and
    # inside `right` (where it is never reached): each is counted where it sits.
    assert nodes["main/left/inner"].chosen == {"a": 3}
    assert nodes["main/right/inner"].chosen == {"b": 3}
    assert nodes["main/shared"].chosen == {"a": 3}
    assert "main/right/shared" not in nodes
    assert nodes["main"].kind == "ensemble"


async def test_unparsed_answers_are_counted_and_count_as_wrong(
    write_config: Callable[[str], Path],
) -> None:
    async with modelyard.load(write_config(CONFIG)) as yard:
        evaluation = await evaluate(yard, "spy", _items(4), make_scorer("choice"))
    report = evaluation.report
    assert report.unparsed == 4 and report.scored == 0
    assert report.accuracy == 0.0 and report.accuracy_scored is None


async def test_failed_calls_are_counted_apart(write_config: Callable[[str], Path]) -> None:
    async with modelyard.load(write_config(CONFIG)) as yard:
        evaluation = await evaluate(yard, "broken", _items(3), make_scorer("exact"))
    assert evaluation.report.failed == 3 and evaluation.report.accuracy == 0.0
    first = evaluation.tally.first_failure
    assert first is not None and first[0] == "0" and "unavailable" in first[1]


def test_leaf_models_of_a_system(write_config: Callable[[str], Path]) -> None:
    yard = modelyard.load(write_config(CONFIG))
    assert leaf_models(yard, "main") == ["broken", "steady"]


DECIDERS = """
models:
  clf: {local: {type: fake, default: "math"}}
  judge: {local: {type: fake, default: "1"}}
  check: {local: {type: fake, default: "yes"}}
  a: {local: {type: fake, default: "A"}}
  b: {local: {type: fake, default: "B"}}
  c: {local: {type: fake, default: "C"}}
systems:
  special: {type: specialist, classifier: clf, specialists: {math: a}, generalist: b}
  routed:
    type: router
    routes: {math: a, other: b}
    default: other
    classifier: {model: clf}
  verified:
    type: cascade
    stages:
      - {model: a, threshold: 0.5, estimator: {type: verifier, model: check}}
      - {model: b}
  agreed:
    type: cascade
    stages:
      - {model: a, threshold: 0.5, estimator: {type: agreement, models: [c]}}
      - {model: b}
  judged: {type: ensemble, members: [a, b], combine: judge, judge: judge}
  gated:
    type: pipeline
    stages: [{model: a, gates: [{type: checker, model: check}], escalate: b}]
"""


@pytest.mark.parametrize(
    ("system", "contenders"),
    [
        ("special", ["a", "b"]),
        ("routed", ["a", "b"]),
        ("verified", ["a", "b"]),
        ("agreed", ["a", "c", "b"]),  # the checkers answer the question themselves
        ("judged", ["a", "b"]),
        ("gated", ["a", "b"]),
    ],
)
def test_leaf_models_leave_out_the_models_that_only_decide(
    write_config: Callable[[str], Path], system: str, contenders: list[str]
) -> None:
    # A classifier answering "math" would stand beside the system as a model scoring 0 %
    # at no cost, and become the random router's and APGR's weak model.
    yard = modelyard.load(write_config(DECIDERS))
    assert leaf_models(yard, system) == contenders


def test_empty_split_is_an_error_naming_the_splits_present() -> None:
    items = [Item(id="1", prompt="a", split="train")]
    with pytest.raises(ConfigError) as caught:
        select_split(items, "test")
    assert "'test' is empty" in str(caught.value) and "train" in str(caught.value)


def test_holdout_is_seeded_and_disjoint() -> None:
    items = _items(10)
    train, test = holdout(items, 0.3, seed=1)
    again, _ = holdout(items, 0.3, seed=1)
    assert len(test) == 3 and [i.id for i in train] == [i.id for i in again]
    assert not {i.id for i in train} & {i.id for i in test}


def test_labelled_jsonl_reads_answer_as_label_and_keeps_metadata(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    rows = [{"prompt": "2+2", "answer": 4, "split": "test", "topic": "math"}]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    (item,) = load_labelled(path)
    assert item.label == "4" and item.split == "test" and item.meta == {"topic": "math"}


def test_a_labelled_chats_system_messages_become_the_system_prompt(tmp_path: Path) -> None:
    """As the gateway makes them, so replayed traffic reaches a system as it did live."""
    path = tmp_path / "set.jsonl"
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ]
    path.write_text(json.dumps({"messages": messages, "label": "x"}), encoding="utf-8")
    (item,) = load_labelled(path)
    request = item.request()
    assert request.system == "Be brief."
    assert [(m.role, m.text) for m in request.messages] == [
        ("user", "hi"),
        ("assistant", "hello"),
        ("user", "bye"),
    ]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("set.jsonl", '{"text": "Where is order 7?", "label": "order_status"}\n'),
        ("set.csv", "text,label\nWhere is order 7?,order_status\n"),
    ],
)
def test_a_labelled_set_may_name_its_prompt_text(name: str, text: str, tmp_path: Path) -> None:
    # Ticket exports (and the quickstart's own tickets) call the question `text`.
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    (item,) = load_labelled(path)
    assert item.prompt == "Where is order 7?" and item.label == "order_status"
    assert "text" not in item.meta


def test_a_text_field_beside_a_prompt_is_kept_as_metadata(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text('{"prompt": "Where is order 7?", "text": "from the web form"}\n')
    (item,) = load_labelled(path)
    assert item.prompt == "Where is order 7?" and item.meta == {"text": "from the web form"}


def test_labelled_csv_without_prompt_names_the_column(tmp_path: Path) -> None:
    path = tmp_path / "set.csv"
    path.write_text("question,label\nhi,x\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_labelled(path)
    assert "'prompt'" in str(caught.value) and "set.csv" in str(caught.value)


def test_repeated_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text('{"id": 1, "prompt": "a"}\n{"id": 1, "prompt": "b"}\n', encoding="utf-8")
    with pytest.raises(ConfigError):
        load_labelled(path)


async def test_a_slow_sync_scorer_runs_in_threads_so_items_are_scored_at_once(
    write_config: Callable[[str], Path],
) -> None:
    spans: list[tuple[float, float, int]] = []

    def slow(item: Item, response: object) -> bool:
        started = time.perf_counter()
        time.sleep(0.2)  # a scorer calling out, or computing: it must not hold the loop
        spans.append((started, time.perf_counter(), threading.get_ident()))
        return True

    async with modelyard.load(write_config(CONFIG)) as yard:
        evaluation = await evaluate(yard, "steady", _items(8), CallableScorer(slow), concurrency=8)
    assert evaluation.report.scored == 8
    first_end = min(end for _, end, _ in spans)
    overlapping = [start for start, _, _ in spans if start < first_end]
    assert len(overlapping) >= 4, spans  # run one after another, only the first starts before
    assert threading.get_ident() not in {thread for _, _, thread in spans}


async def test_items_are_read_as_results_come_not_all_up_front(
    write_config: Callable[[str], Path],
) -> None:
    # A replay of logged traffic is hundreds of thousands of items: the runner reads the
    # next only when it has room, a bounded window past the results handed back.
    bound = AHEAD * 2
    read, done = [0], [0]

    def stream() -> Iterator[Item]:
        for item in _items(100):
            assert read[0] - done[0] < bound, f"item {item.id} read with {done[0]} results out"
            read[0] += 1
            yield item

    def count(_: ItemResult) -> None:
        done[0] += 1

    async with modelyard.load(write_config(CONFIG)) as yard:
        evaluation = await evaluate(
            yard, "steady", stream(), make_scorer("choice"), concurrency=2, on_result=count
        )
    assert read[0] == done[0] == evaluation.report.n == 100


SLOW_FIRST = """
models:
  uneven:
    local: {type: fake, answers: {"q0": {text: "B", latency: 0.2}}, default: "B"}
"""


async def test_results_come_in_item_order_when_a_slow_item_finishes_last(
    write_config: Callable[[str], Path],
) -> None:
    items = [Item(id=str(n), prompt=f"q{n}", label="B") for n in range(12)]
    seen: list[str] = []
    async with modelyard.load(write_config(SLOW_FIRST)) as yard:
        evaluation = await evaluate(
            yard,
            "uneven",
            items,
            make_scorer("choice"),
            concurrency=4,
            on_result=lambda r: seen.append(r.id),
        )
    assert seen == [item.id for item in items]
    assert evaluation.tally.ids == seen


def test_an_item_source_hands_out_items_before_it_reads_a_late_bad_row(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [{"id": f"q{n}", "prompt": f"q{n}?"} for n in range(5)]
    path = write_jsonl(tmp_path / "set.jsonl", [*rows, {"id": "q9", "question": "no prompt"}])
    passes = iter(ItemSource(str(path)))
    assert next(passes).id == "q0"  # the file is read as items are asked for
    with pytest.raises(ConfigError, match="missing field 'prompt'") as caught:
        list(passes)
    assert "set.jsonl:6:" in str(caught.value)


@pytest.mark.parametrize(
    ("late", "error"),
    [
        ({"id": "q0", "prompt": "again"}, "item id 'q0' is also the id of line 1"),
        ({"id": "q7", "messages": []}, "'messages' must be a non-empty list"),
    ],
)
def test_a_limit_still_reads_the_rest_of_the_file(
    tmp_path: Path, late: dict[str, object], error: str
) -> None:
    rows: list[dict[str, object]] = [{"id": f"q{n}", "prompt": f"q{n}?"} for n in range(5)]
    path = write_jsonl(tmp_path / "set.jsonl", [*rows, late])
    with pytest.raises(ConfigError, match=error):
        list(ItemSource(str(path), limit=2))


def test_an_item_source_of_an_absent_split_names_the_splits_present(tmp_path: Path) -> None:
    rows = [{"prompt": f"q{n}?", "split": "train"} for n in range(3)]
    path = write_jsonl(tmp_path / "set.jsonl", rows)
    with pytest.raises(ConfigError, match="split 'test' is empty; splits present: train"):
        list(ItemSource(str(path), split="test"))


def test_each_pass_reads_the_file_again_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [
        {"id": "a", "prompt": "same?", "label": "x"},
        {"id": "b", "prompt": "same?", "label": "y"},
    ]
    source = ItemSource(str(write_jsonl(tmp_path / "set.jsonl", rows)), limit=1)
    first, second = list(source), list(source)
    assert [i.id for i in first] == [i.id for i in second] == ["a"]
    clashes = [r for r in caplog.records if "with different labels ('x', 'y')" in r.getMessage()]
    assert len(clashes) == 1


def test_a_file_written_to_between_passes_stops_the_next_pass(tmp_path: Path) -> None:
    rows = [{"id": f"q{n}", "prompt": f"q{n}?"} for n in range(3)]
    path = write_jsonl(tmp_path / "set.jsonl", rows)
    source = ItemSource(str(path))
    assert [i.id for i in source] == ["q0", "q1", "q2"]
    with path.open("a") as out:  # a golden set appended to while `gate` runs
        out.write('{"id": "q3", "prompt": "q3?"}\n')
    with pytest.raises(ConfigError, match="changed while it was being read") as caught:
        list(source)
    assert "set.jsonl" in str(caught.value)


def test_a_file_written_to_during_a_pass_stops_that_pass(tmp_path: Path) -> None:
    rows = [{"id": f"q{n}", "prompt": f"q{n}?"} for n in range(3)]
    path = write_jsonl(tmp_path / "set.jsonl", rows)
    passes = iter(ItemSource(str(path)))
    assert next(passes).id == "q0"
    path.write_text('{"id": "q0", "prompt": "other?"}\n')
    with pytest.raises(ConfigError, match="changed while it was being read"):
        list(passes)
