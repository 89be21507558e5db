"""A cascade's learned check: trained on recorded answers, it accepts the answers like those
that were right and escalates the ones like those that were wrong."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelyard.cli import app
from modelyard.errors import ConfigError, UnavailableError
from modelyard.model import Embedder, ModelInfo
from modelyard.patterns.artifact import load as load_artifact
from modelyard.patterns.estimators import LearnedEstimator
from modelyard.patterns.routing import TrainedPredictor
from modelyard.types import EmbeddingRequest, EmbeddingResponse, user
from modelyard.yard import Yard
from tests.patterns.conftest import PRICE

MODELS = f"""
models:
  steady:
    local: {{type: fake, default: "The total is 42, checked twice."}}
    {PRICE}
  unsure:
    local: {{type: fake, default: "Maybe 41? I am not sure."}}
    {PRICE}
  big:
    local: {{type: fake, default: "42"}}
    {PRICE}
embedders:
  hash: {{local: {{type: hashing, dimensions: 256}}}}
"""


def write_outcomes(path: Path, *, responses: bool = True) -> None:
    """The cheap model was right when it answered plainly, wrong when it hedged."""
    lines = []
    for i in range(40):
        for answer, right in (
            (f"The total is {i}, checked twice.", True),
            (f"Maybe {i + 1}? I am not sure.", False),
        ):
            line = {"prompt": f"add up list {i}", "model": "cheap", "correct": right}
            if responses:
                line["response"] = answer
            lines.append(line)
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")


def invoke_train(outcomes: Path, artifact: Path, features: str) -> tuple[int, str]:
    config = outcomes.parent / "models.yaml"
    config.write_text(MODELS)
    options = ["--embedder", "hash", "--config", str(config), "--features", features]
    result = CliRunner().invoke(app, ["train", str(outcomes), *options, "-o", str(artifact)])
    return result.exit_code, " ".join(result.output.split())


def train(tmp_path: Path, features: str, *, responses: bool = True) -> tuple[int, str, Path]:
    outcomes = tmp_path / f"{features}.jsonl"
    write_outcomes(outcomes, responses=responses)
    artifact = tmp_path / f"{features}.npz"
    return (*invoke_train(outcomes, artifact, features), artifact)


@pytest.fixture(scope="module")
def check(tmp_path_factory: pytest.TempPathFactory) -> Path:
    code, output, artifact = train(tmp_path_factory.mktemp("check"), "answer")
    assert code == 0, output
    assert "40 prompts x 1 models" in output
    return artifact


def cascade(first: str, artifact: Path, extra: str = "candidate: cheap") -> str:
    return (
        MODELS
        + f"""
systems:
  qa:
    type: cascade
    stages:
      - model: {first}
        threshold: 0.5
        estimator: {{type: learned, artifact: {artifact}, embedder: hash, {extra}}}
      - model: big
"""
    )


async def test_an_answer_like_the_right_ones_is_accepted(
    check: Path, yard_of: Callable[[str], Yard]
) -> None:
    async with yard_of(cascade("steady", check)) as yard:
        response = await yard.complete("qa", "add up list 77")
    assert response.model == "steady"
    assert response.decision is not None
    first = response.decision.children[0]
    assert first.reason.startswith("accepted: learned P(correct) ")
    assert [c.kind for c in first.children] == ["model", "embedder"]
    assert first.children[1].reason == "embedded the answer"


async def test_an_answer_like_the_wrong_ones_escalates(
    check: Path, yard_of: Callable[[str], Yard]
) -> None:
    async with yard_of(cascade("unsure", check)) as yard:
        response = await yard.complete("qa", "add up list 77")
    assert response.model == "big"
    assert response.decision is not None
    reason = response.decision.children[0].reason
    assert reason.startswith("escalated: learned P(correct) ") and reason.endswith("< 0.5")


def test_a_stage_the_artifact_does_not_know_is_refused(
    check: Path, config_error: Callable[[str], ConfigError]
) -> None:
    error = config_error(cascade("steady", check, extra="candidate: gpt"))
    assert "the artifact has no model 'gpt'" in str(error)
    assert "systems.qa.stages[0].estimator.candidate" in str(error)


def test_a_routers_artifact_is_refused_as_a_check_and_the_other_way_round(
    tmp_path: Path, check: Path, config_error: Callable[[str], ConfigError]
) -> None:
    code, output, prompts_only = train(tmp_path, "prompt")
    assert code == 0, output
    error = config_error(cascade("steady", prompts_only))
    assert "trained with --features prompt" in str(error)
    assert "modelyard train --features answer" in str(error)
    router = MODELS + (
        "systems:\n  front:\n    type: router\n    routes: {cheap: steady}\n    default: cheap\n"
        f"    learned: {{artifact: {check}, embedder: hash}}\n"
    )
    assert "trained with --features answer" in str(config_error(router))


def test_training_a_check_needs_every_response(tmp_path: Path) -> None:
    code, output, _ = train(tmp_path, "answer", responses=False)
    assert code == 2
    assert "answer.jsonl:1: missing 'response'" in output


def test_training_a_check_on_synthesised_answers_is_refused(tmp_path: Path) -> None:
    code, output, _ = train(tmp_path, "answer")
    assert code == 0, output
    outcomes = tmp_path / "answer.jsonl"
    lines = outcomes.read_text().splitlines()
    lines[3] = lines[3][:-1] + ', "synthetic": true}'
    outcomes.write_text("\n".join(lines) + "\n")
    code, output = invoke_train(outcomes, tmp_path / "x.npz", "answer")
    assert code == 2
    assert "answer.jsonl:4: the response was synthesised" in output


class _Down(Embedder):
    """An embedder whose service is down."""

    def __init__(self) -> None:
        self.info = ModelInfo(name="down", kind="embedder")

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        raise UnavailableError("embedding service down", model="down")


async def test_a_check_whose_embedder_fails_is_unsure_and_records_the_failure(
    check: Path, yard_of: Callable[[str], Yard]
) -> None:
    artifact = load_artifact(check)
    trained = TrainedPredictor(_Down(), artifact.predictor, artifact.dimensions)
    estimator = LearnedEstimator(trained, "cheap", 0)
    async with yard_of(MODELS) as yard:
        estimate = await estimator.run(yard.models["steady"], user("add up list 77"))
    assert estimate.response is not None and estimate.confidence is None
    assert estimate.reason == "embedder down failed (unavailable)"
    assert [(c.node, c.reason) for c in estimate.children] == [
        ("steady", "answered"),
        ("down", "failed"),
    ]


def test_a_check_is_trained_with_the_config_that_will_use_it(
    tmp_path: Path, yard_of: Callable[[str], Yard]
) -> None:
    """`train --config` builds only the embedders, so the config may already name the artifact
    that run writes."""
    outcomes, artifact = tmp_path / "outcomes.jsonl", tmp_path / "new.npz"
    write_outcomes(outcomes)
    config = tmp_path / "system.yaml"
    config.write_text(cascade("steady", artifact))
    options = ["--embedder", "hash", "--config", str(config), "--features", "answer"]
    result = CliRunner().invoke(app, ["train", str(outcomes), *options, "-o", str(artifact)])
    assert result.exit_code == 0, result.output
    assert "qa" in yard_of(cascade("steady", artifact)).systems
