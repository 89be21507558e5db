"""A small support desk of scripted models whose every decision is known in advance, and the
tickets that exercise each of its paths (the summary, report and CLI tests run it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import modelyard
from modelyard.yard import Yard

DESK = """
models:
  labeller:
    local:
      type: fake
      answers:
        "where is 1": {text: orders, confidence: 0.9}
        "where is 2": {text: orders, confidence: 0.9}
        "refund please": {text: refunds, confidence: 0.9}
        "what is this": {text: product, confidence: 0.9}
        "hmm": {text: orders, confidence: 0.2}
      default: {text: orders, confidence: 0.9}
  lookup:
    local:
      type: fake
      answers: {"where is 1": "it shipped"}
      default: {error: no_answer}
  cheap:
    local:
      type: fake
      answers: {"refund please": {text: "within 30 days", confidence: 0.9}}
      default: {text: "not sure", confidence: 0.1}
  big:
    local: {type: fake, default: "the big answer"}
    price: {input: 1.0, output: 2.0}
systems:
  desk:
    type: router
    rules: [{route: shouting, regex: "^[A-Z !]+$"}]
    default: triage
    routes: {shouting: big, triage: triage}
  triage:
    type: specialist
    classifier: labeller
    min_confidence: 0.5
    specialists:
      orders: {type: fallback, name: orders, chain: [lookup, answer]}
      refunds: answer
    generalist: answer
  answer:
    type: cascade
    stages:
      - {model: cheap, estimator: {type: confidence}, threshold: 0.5}
      - {model: big}
"""

TICKETS = [
    # (id, text, label): what happens
    ("t1", "where is 1", "orders"),  # orders: lookup answers
    ("t2", "where is 2", "orders"),  # orders: lookup fails, the cascade's big model answers
    ("t3", "refund please", "refunds"),  # refunds: the cheap stage is sure
    ("t4", "what is this", "product"),  # no specialist: the generalist, rightly
    ("t5", "hmm", "refunds"),  # the classifier is unsure: the generalist, wrongly
    ("t6", "HELP NOW", "shouting"),  # a rule sends it to big
]


@pytest.fixture
def desk_config(tmp_path: Path) -> Path:
    """The desk's config file, with its tickets beside it."""
    path = tmp_path / "desk.yaml"
    path.write_text(DESK, encoding="utf-8")
    lines = [f'{{"id": "{i}", "text": "{text}", "label": "{label}"}}' for i, text, label in TICKETS]
    (tmp_path / "tickets.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def desk(desk_config: Path) -> Callable[[], Yard]:
    """A fresh yard of the desk."""
    return lambda: modelyard.load(desk_config)
