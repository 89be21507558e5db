"""Router configs: rules, classifier, semantic and learned routing, with their decisions."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from modelyard.cli import app
from modelyard.errors import ConfigError
from modelyard.model import ModelInfo
from modelyard.providers.local_basic import HashingEmbedder
from modelyard.streaming import collect
from modelyard.types import user
from modelyard.yard import Yard
from tests.patterns.conftest import PRICE, dollars, with_hosted

MODELS = f"""
models:
  coder:
    local: {{type: fake, default: "def f(): pass"}}
    {PRICE}
  chat:
    local: {{type: fake, default: "Hello there"}}
    {PRICE}
  clf:
    local:
      type: fake
      answers:
        "refund please": {{text: "Billing", confidence: 0.9}}
        "maybe a refund": {{text: "billing", confidence: 0.3}}
        "sing to me": {{text: "poetry", confidence: 0.99}}
embedders:
  hash: {{local: {{type: hashing, dimensions: 256}}}}
"""

RULES = (
    MODELS
    + """
systems:
  front:
    type: router
    routes: {code: coder, chat: chat}
    default: chat
    rules:
      - {route: code, keywords: [python, javascript]}
      - {route: code, metadata: {team: platform}}
"""
)


async def test_rule_routes_and_records_the_rule(yard_of: Callable[[str], Yard]) -> None:
    async with yard_of(RULES) as yard:
        response = await yard.complete("front", "help me with Python please")
    assert response.text == "def f(): pass"
    assert response.model == "coder"
    assert response.cost == dollars("def f(): pass") == 4.0
    decision = response.decision
    assert decision is not None
    assert (decision.node, decision.kind, decision.chosen) == ("front", "router", "code")
    assert decision.reason == "rule 0 matched (keyword 'python')"
    assert dict(decision.scores) == {"code": 1.0}
    assert decision.cost == 4.0
    assert [c.node for c in decision.children] == ["coder"]


async def test_metadata_rule(yard_of: Callable[[str], Yard]) -> None:
    async with yard_of(RULES) as yard:
        response = await yard.complete("front", "hi", metadata={"team": "platform"})
    assert response.model == "coder"
    assert response.decision is not None
    assert response.decision.reason == "rule 1 matched (metadata team=platform)"


async def test_no_rule_means_the_default(yard_of: Callable[[str], Yard]) -> None:
    async with yard_of(RULES) as yard:
        response = await yard.complete("front", "good morning")
    assert response.model == "chat"
    assert response.cost == 3.0
    assert response.decision is not None
    assert response.decision.reason == "no rule matched; default route 'chat'"


async def test_stream_goes_to_the_chosen_route(yard_of: Callable[[str], Yard]) -> None:
    async with yard_of(RULES) as yard:
        chunks = [c async for c in yard.stream("front", "python")]
    assert "".join(c.text for c in chunks) == "def f(): pass"
    final = chunks[-1].response
    assert final is not None and final.decision is not None
    assert final.decision.chosen == "code" and final.cost == 4.0


CLASSIFIER = (
    MODELS
    + """
systems:
  front:
    type: router
    routes: {billing: coder, tech: chat}
    default: tech
    classifier: {model: clf, min_confidence: 0.5, labels: [billing, tech]}
"""
)


async def test_classifier_label_routes_when_confident(yard_of: Callable[[str], Yard]) -> None:
    async with yard_of(CLASSIFIER) as yard:
        response = await yard.complete("front", "refund please")
    assert response.model == "coder"
    decision = response.decision
    assert decision is not None
    assert decision.chosen == "billing"
    assert dict(decision.scores) == {"billing": 0.9}
    assert decision.threshold == 0.5
    assert decision.reason == "classifier said 'billing'; confidence 0.900 >= 0.5"
    assert [c.node for c in decision.children] == ["clf", "coder"]


async def test_unconfident_classifier_falls_to_the_default(yard_of: Callable[[str], Yard]) -> None:
    async with yard_of(CLASSIFIER) as yard:
        response = await yard.complete("front", "maybe a refund")
    assert response.model == "chat"
    assert response.decision is not None
    assert response.decision.reason == (
        "classifier said 'billing'; confidence 0.300 < 0.5; default route 'tech'"
    )


async def test_unknown_label_falls_to_the_default(yard_of: Callable[[str], Yard]) -> None:
    async with yard_of(CLASSIFIER) as yard:
        response = await yard.complete("front", "sing to me")
    assert response.model == "chat"
    assert response.decision is not None
    assert "names no route" in response.decision.reason


def test_a_min_confidence_a_hosted_classifier_cannot_clear_is_refused(
    config_error: Callable[[str], ConfigError],
) -> None:
    """A hosted model gives no confidence: every request would take the default route."""
    error = config_error(with_hosted(CLASSIFIER.replace("model: clf", "model: hosted")))
    message = str(error)
    assert "systems.front.classifier.min_confidence: the classifier's model 'hosted'" in message
    assert "min_confidence 0.5 would send every request to the default route" in message


def test_declared_label_without_route_is_refused(
    config_error: Callable[[str], ConfigError],
) -> None:
    error = config_error(CLASSIFIER.replace("labels: [billing, tech]", "labels: [billing, sales]"))
    assert "classifier label 'sales' has no route" in str(error)
    assert "systems.front" in str(error)


def test_router_without_default_is_refused(config_error: Callable[[str], ConfigError]) -> None:
    error = config_error(RULES.replace("    default: chat\n", ""))
    assert "needs a default route" in str(error) and "systems.front" in str(error)


def test_rule_to_an_unknown_route_is_refused(config_error: Callable[[str], ConfigError]) -> None:
    error = config_error(RULES.replace("{route: code, keywords", "{route: coding, keywords"))
    assert "rules[0] route 'coding' is not a route; did you mean 'code'?" in str(error)
    assert "add routes.coding: <model or system>" in str(error)


def test_a_default_naming_a_model_says_routes_are_keys_of_routes(
    config_error: Callable[[str], ConfigError],
) -> None:
    """`default: <a model>` is the usual slip: the error says a route is a key of `routes` and
    how to add one (it had only listed the routes)."""
    error = config_error(RULES.replace("    default: chat\n", "    default: gpt\n"))
    assert "default 'gpt' is not a route: a route is a key of routes (code, chat)" in str(error)
    assert "add routes.gpt: <model or system>" in str(error) and "systems.front" in str(error)


def test_language_rule_with_a_detector_from_config(
    yard_of: Callable[[str], Yard], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "detector_for_tests.py").write_text(
        "def detect(text):\n    return ('fr', 0.9) if 'bonjour' in text else ('en', 0.9)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    text = RULES.replace(
        "      - {route: code, metadata: {team: platform}}",
        "      - {route: code, language: [fr]}\n    language_detector: detector_for_tests:detect",
    )
    yard = yard_of(text)
    assert yard.systems["front"].describe()["rules"].endswith("language fr -> code")  # type: ignore[union-attr]


SEMANTIC = (
    MODELS
    + """
systems:
  front:
    type: router
    routes: {billing: coder, tech: chat}
    default: tech
    semantic:
      embedder: hash
      threshold: 0.6
      examples:
        billing: ["refund my invoice", "charge on my card"]
        tech: ["the app crashes on start"]
"""
)


def test_semantic_examples_for_an_unknown_route_name_the_likely_route(
    config_error: Callable[[str], ConfigError],
) -> None:
    """It had said only "semantic examples for 'biling', which is not a route"."""
    error = config_error(SEMANTIC.replace("        billing: [", "        biling: ["))
    message = str(error)
    assert "semantic.examples key 'biling' is not a route; did you mean 'billing'?" in message
    assert "a route is a key of routes (billing, tech)" in message.lower()


def cosine(a: str, b: str) -> float:
    embedder = HashingEmbedder(ModelInfo(name="hash", kind="hashing"), 256)
    return float(np.dot(embedder.vector(a), embedder.vector(b)))


async def test_semantic_route_by_nearest_example(yard_of: Callable[[str], Yard]) -> None:
    prompt = "refund my invoice please"
    async with yard_of(SEMANTIC) as yard:
        response = await yard.complete("front", prompt)
    expected_billing = max(cosine(prompt, "refund my invoice"), cosine(prompt, "charge on my card"))
    assert expected_billing >= 0.6
    decision = response.decision
    assert decision is not None
    assert response.model == "coder" and decision.chosen == "billing"
    assert decision.scores["billing"] == pytest.approx(expected_billing, abs=1e-5)
    tech = cosine(prompt, "the app crashes on start")
    assert decision.scores["tech"] == pytest.approx(tech, abs=1e-5)
    assert decision.threshold == 0.6
    assert [c.kind for c in decision.children] == ["embedder", "model"]


async def test_semantic_below_threshold_goes_to_default(yard_of: Callable[[str], Yard]) -> None:
    async with yard_of(SEMANTIC) as yard:
        response = await yard.complete("front", "zzz qqq")
    assert response.model == "chat"
    assert response.decision is not None
    assert "< threshold 0.6; default route 'tech'" in response.decision.reason


def test_semantic_unknown_embedder_is_refused(config_error: Callable[[str], ConfigError]) -> None:
    error = config_error(SEMANTIC.replace("embedder: hash", "embedder: nope"))
    assert "unknown embedder 'nope'" in str(error)


# --- learned ---------------------------------------------------------------------------------

LEARNED_MODELS = f"""
models:
  cheap:
    local: {{type: fake, default: "cheap answer"}}
    {PRICE}
  strong:
    local: {{type: fake, default: "strong answer"}}
    {PRICE}
embedders:
  hash: {{local: {{type: hashing, dimensions: 256}}}}
"""


def write_outcomes(path: Path) -> None:
    """cheap is right on arithmetic, wrong on proofs; strong is right on both, 10x dearer."""
    lines = []
    for i in range(30):
        for prompt, cheap_right in (
            (f"add {i} and {i + 1}", True),
            (f"prove lemma {i} rigorously", False),
        ):
            lines.append(
                {"prompt": prompt, "model": "cheap", "correct": cheap_right, "cost": 0.001}
            )
            lines.append({"prompt": prompt, "model": "strong", "correct": True, "cost": 0.01})
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train once for the module: cheap vs strong on arithmetic vs proofs."""
    tmp_path = tmp_path_factory.mktemp("learned")
    config = tmp_path / "models.yaml"
    config.write_text(LEARNED_MODELS)
    outcomes = tmp_path / "outcomes.jsonl"
    write_outcomes(outcomes)
    artifact = tmp_path / "router.npz"
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(outcomes),
            "--embedder",
            "hash",
            "--config",
            str(config),
            "-o",
            str(artifact),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "60 prompts x 2 models" in " ".join(result.output.split())
    return artifact


def learned_config(
    artifact: Path, lam: float, routes: str = "{cheap: cheap, strong: strong}"
) -> str:
    return (
        LEARNED_MODELS
        + f"""
systems:
  front:
    type: router
    routes: {routes}
    default: strong
    learned: {{artifact: {artifact}, embedder: hash, lambda: {lam}}}
"""
    )


async def test_learned_router_sends_easy_prompts_to_the_cheap_model(
    trained: Path, yard_of: Callable[[str], Yard]
) -> None:
    async with yard_of(learned_config(trained, 0.5)) as yard:
        easy = await yard.complete("front", "add 40 and 41")
        hard = await yard.complete("front", "prove lemma 40 rigorously")
    assert easy.model == "cheap" and hard.model == "strong"
    decision = hard.decision
    assert decision is not None
    p = decision.details["p_success"]
    # utility = P − λ·cost/max cost, with recorded mean costs 0.001 and 0.01
    assert decision.scores["cheap"] == pytest.approx(p["cheap"] - 0.5 * 0.1)
    assert decision.scores["strong"] == pytest.approx(p["strong"] - 0.5)
    assert dict(decision.details["cost_usd"]) == pytest.approx({"cheap": 0.001, "strong": 0.01})
    assert decision.reason.startswith("highest P(success) - lambda*cost: 'strong'")


async def test_lambda_zero_picks_the_most_likely_to_succeed(
    trained: Path, yard_of: Callable[[str], Yard]
) -> None:
    async with yard_of(learned_config(trained, 0.0)) as yard:
        response = await yard.complete("front", "prove lemma 41 rigorously")
    assert response.model == "strong"


def test_artifact_for_other_models_is_refused(
    trained: Path, config_error: Callable[[str], ConfigError]
) -> None:
    error = config_error(learned_config(trained, 0.5, "{cheap: cheap, strong: strong, x: cheap}"))
    assert "trained for models ['cheap', 'strong']" in str(error)
    assert "systems.front.learned.artifact" in str(error)


def test_train_reports_a_bad_outcomes_line(
    tmp_path: Path, write_config: Callable[[str], Path]
) -> None:
    config = write_config(LEARNED_MODELS, "models.yaml")
    outcomes = tmp_path / "bad.jsonl"
    outcomes.write_text('{"prompt": "x", "model": "cheap", "correct": true}\n{"prompt": "y"}\n')
    result = CliRunner().invoke(
        app,
        ["train", str(outcomes), "--embedder", "hash", "--config", str(config), "-o", "x.npz"],
    )
    assert result.exit_code == 2
    assert "bad.jsonl:2: missing 'model'" in " ".join(result.output.split())


def test_train_on_recordings_that_are_not_jsonl_outcomes_says_how_to_make_them(
    tmp_path: Path, write_config: Callable[[str], Path]
) -> None:
    # `train shared:routerbench-train/arc_challenge_train.csv` said only "1: not JSON".
    config = write_config(LEARNED_MODELS, "models.yaml")
    outcomes = tmp_path / "arc.csv"
    outcomes.write_text("sample_id,prompt,m,m|model_response,m|total_cost\na,['Q'],1,['A'],0.1\n")
    result = CliRunner().invoke(
        app,
        ["train", str(outcomes), "--embedder", "hash", "--config", str(config), "-o", "x.npz"],
    )
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "arc.csv:1: not JSON" in text
    assert "`modelyard split FORMAT RECORDINGS --out DIR` writes them" in text


async def test_router_stream_records_the_decision(
    trained: Path, yard_of: Callable[[str], Yard]
) -> None:
    async with yard_of(learned_config(trained, 0.5)) as yard:
        response = await collect(yard.get("front").stream(user("add 2 and 3")))
    assert response.model == "cheap"
    assert response.decision is not None and response.decision.chosen == "cheap"


async def test_decision_to_dict_is_json_ready(
    trained: Path, yard_of: Callable[[str], Yard]
) -> None:
    async with yard_of(learned_config(trained, 0.5)) as yard:
        response = await yard.complete("front", "add 2 and 3")
    assert response.decision is not None
    record = json.loads(json.dumps(response.decision.to_dict()))
    assert set(record["scores"]) == {"cheap", "strong"}
    assert set(record["details"]["p_success"]) == {"cheap", "strong"}


def test_train_makes_the_folder_of_its_output(
    tmp_path: Path, write_config: Callable[[str], Path]
) -> None:
    config = write_config(LEARNED_MODELS, "models.yaml")
    outcomes = tmp_path / "outcomes.jsonl"
    write_outcomes(outcomes)
    artifact = tmp_path / "new" / "router.npz"
    args = ["train", str(outcomes), "--embedder", "hash", "--config", str(config)]
    result = CliRunner().invoke(app, [*args, "-o", str(artifact)])
    assert result.exit_code == 0, result.output
    assert artifact.exists()


def test_train_refuses_a_folder_as_output_before_fitting(
    tmp_path: Path, write_config: Callable[[str], Path]
) -> None:
    config = write_config(LEARNED_MODELS, "models.yaml")
    outcomes = tmp_path / "outcomes.jsonl"
    write_outcomes(outcomes)
    args = ["train", str(outcomes), "--embedder", "hash", "--config", str(config)]
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path)])
    assert result.exit_code == 2 and "it is a folder" in result.output
    assert "held-out log-loss" not in result.output
