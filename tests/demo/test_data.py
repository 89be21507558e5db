"""The data the quickstart ships: tickets, knowledge base and orders are valid, balanced, agree
with the config, and are exactly what their generator writes."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from modelyard.config.loader import load_config
from modelyard.config.nodes import SpecialistSpec
from modelyard.config.router_nodes import RouterSpec
from modelyard.demo.orders import order_numbers, read_orders
from modelyard.local.datasets import read_examples, read_faq

from ..conftest import EXAMPLES

DATA = EXAMPLES / "data" / "acme"
UNKNOWN_ORDERS = {"ORD-739999", "ORD-731111", "ORD-740512", "ORD-745003", "ORD-700001"}
"""Order numbers the tickets use on purpose that the orders table does not hold."""


def _rows(split: str) -> list[dict[str, str]]:
    path = DATA / f"tickets-{split}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_tickets", DATA / "make_tickets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_ticket_has_an_id_text_label_and_its_split(split: str) -> None:
    for row in _rows(split):
        assert set(row) == {"id", "text", "label", "split"}
        assert row["text"].strip() and row["label"] and row["split"] == split


def test_the_classifier_reads_the_training_file() -> None:
    pairs = read_examples(DATA / "tickets-train.jsonl")
    assert len(pairs) == len(_rows("train"))


def test_every_label_has_train_and_test_tickets_in_balance() -> None:
    train = Counter(row["label"] for row in _rows("train"))
    test = Counter(row["label"] for row in _rows("test"))
    assert set(train) == set(test)
    assert len(train) >= 6
    assert max(train.values()) <= 1.25 * min(train.values())
    for label in train:
        assert 1.5 <= train[label] / test[label] <= 2.5


def test_ids_are_unique_and_no_text_is_in_both_splits() -> None:
    rows = _rows("train") + _rows("test")
    assert len({row["id"] for row in rows}) == len(rows)
    train = {row["text"].casefold() for row in _rows("train")}
    assert not train & {row["text"].casefold() for row in _rows("test")}


def test_labels_are_the_routes_of_the_config_and_one_goes_to_the_generalist() -> None:
    systems = load_config(EXAMPLES / "quickstart.yaml").config.systems
    routes: set[str] = set()
    for spec in systems.values():
        if isinstance(spec, RouterSpec):
            routes.update(spec.routes)
        if isinstance(spec, SpecialistSpec):
            routes.update(spec.specialists)
    labels = {row["label"] for row in _rows("train")}
    assert labels - routes == {"product_question"}


def test_the_files_are_what_the_generator_writes(tmp_path: Path) -> None:
    counts = _generator().write(tmp_path)
    assert counts == {"train": len(_rows("train")), "test": len(_rows("test"))}
    for split in ("train", "test"):
        name = f"tickets-{split}.jsonl"
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes()


def test_the_knowledge_base_reads_with_paraphrases() -> None:
    entries = read_faq(DATA / "faq.jsonl")
    assert len(entries) >= 30
    assert all(len(entry.questions) >= 2 for entry in entries)


def test_order_tickets_name_known_orders_or_the_deliberately_unknown_ones() -> None:
    orders = read_orders(DATA / "orders.csv")
    named = {
        number
        for row in _rows("train") + _rows("test")
        if row["label"] == "order_status"
        for number in order_numbers(row["text"])
    }
    assert named - set(orders) == UNKNOWN_ORDERS
    assert len(named & set(orders)) >= 20
