"""examples/quickstart.yaml builds from local models only, and each kind of ticket reaches the
model meant for it (no generation here: SmolLM2 is asked in test_serve_quickstart.py)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator

import pytest

import modelyard
from modelyard.demo.summary import trace
from modelyard.diagram import system_svg
from modelyard.yard import Yard

from ..conftest import EXAMPLES, ROOT

pytestmark = pytest.mark.local

QUICKSTART = EXAMPLES / "quickstart.yaml"


@pytest.fixture(scope="module")
def yard() -> Iterator[Yard]:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    loaded = modelyard.load(QUICKSTART, env=env)
    yield loaded
    asyncio.run(loaded.aclose())


def test_without_a_key_the_hosted_stage_is_skipped_and_said_once(yard: Yard) -> None:
    assert yard.notes == [
        "provider 'openai' is disabled: environment variable OPENAI_API_KEY is not set",
        "cascade escalation: stage gpt-4o-mini is skipped (provider 'openai': environment "
        "variable OPENAI_API_KEY is not set)",
    ]


def test_the_classifier_knows_every_label_of_the_tickets(yard: Yard) -> None:
    path = EXAMPLES / "data" / "acme" / "tickets-test.jsonl"
    labels = {json.loads(line)["label"] for line in path.read_text(encoding="utf-8").splitlines()}
    assert set(yard.models["intent"].describe()["labels"].split(", ")) == labels  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("ticket", "route", "model"),
    [
        ("Where is my order ORD-731842?", "order_status", "order-desk"),
        ("How do I reset my password? The email never comes.", "account", "faq"),
        ("Où est ma commande ? J'attends depuis dix jours.", "non_english", "reply-in-kind"),
        (
            "I've emailed you four times and nobody answers. Unacceptable!",
            "complaint",
            "complaint-desk",
        ),
        ("When will my order arrive? I ordered on Monday.", "order_status", "faq"),
    ],
)
async def test_a_ticket_reaches_its_model(yard: Yard, ticket: str, route: str, model: str) -> None:
    response = await yard.complete("support", ticket)
    assert (trace(response.decision).route, response.model) == (route, model)
    assert response.cost == 0.0


async def test_an_order_without_a_number_falls_back_to_the_generalist(yard: Yard) -> None:
    response = await yard.complete("support", "When will my order arrive? I ordered on Monday.")
    steps = trace(response.decision).fallbacks
    assert [(s.fallback, s.failed, s.answered) for s in steps] == [
        ("orders", "order-desk", "answer")
    ]


def test_the_readme_diagram_is_the_one_the_graph_draws_today(yard: Yard) -> None:
    drawn = (ROOT / "docs" / "quickstart-architecture.svg").read_text(encoding="utf-8")
    assert drawn == system_svg(yard.systems["support"]), (
        "regenerate it: modelyard diagram examples/quickstart.yaml "
        "-o docs/quickstart-architecture.svg (without OPENAI_API_KEY)"
    )
