"""Cross-fitting (`modelyard train --folds K`): every training text keeps a prediction from a fit
that never saw its label, and routers and checks answer training texts from it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from modelyard.cli import app
from modelyard.evaluation.dataset import Item
from modelyard.evaluation.evaluate import evaluate
from modelyard.evaluation.scorers import ExactScorer
from modelyard.patterns.artifact import Artifact, ArtifactError, load, save
from modelyard.patterns.learned import (
    Fitted,
    OutOfFold,
    cross_fit,
    fit_knn,
    fit_logistic,
    text_digest,
)
from modelyard.yard import Yard
from tests.patterns import test_learned_check as checks
from tests.patterns.test_router import LEARNED_MODELS, learned_config, write_outcomes


def _accuracy(p: np.ndarray, y: np.ndarray) -> float:
    return float(((p > 0.5) == (y > 0.5)).mean())


def test_out_of_fold_predictions_never_saw_their_own_labels() -> None:
    # Labels are coin flips: a fit can only memorise them. In sample it does; out of fold it
    # cannot, which is what makes thresholds chosen on these predictions honest.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 200))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = (rng.random((300, 1)) > 0.5).astype(float)
    flexible = Fitted(fit_logistic(x, y, 0.001), "logistic", 0.001, {})
    in_sample = flexible.predictor.predict(x)
    out_of_fold = cross_fit(x, y, flexible, [str(i) for i in range(300)], folds=5)
    assert _accuracy(in_sample, y) > 0.95
    assert 0.35 < _accuracy(out_of_fold, y) < 0.65


def test_the_answers_to_one_prompt_share_a_fold() -> None:
    # Each prompt appears twice (two answers embedded alike, one label). Were the twins in
    # different folds, the nearest neighbour would hand each its twin's label.
    rng = np.random.default_rng(2)
    x = np.repeat(rng.normal(size=(100, 8)), 2, axis=0)
    y = np.repeat((rng.random((100, 1)) > 0.5).astype(float), 2, axis=0)
    nearest = Fitted(fit_knn(x, y, 1), "knn", 1.0, {})
    prompts = [str(i // 2) for i in range(200)]
    split_twins = cross_fit(x, y, nearest, [str(i) for i in range(200)], folds=5)
    grouped = cross_fit(x, y, nearest, prompts, folds=5)
    assert _accuracy(split_twins, y) > 0.8  # twins in one fold (1 in 5) are coin flips
    assert 0.3 < _accuracy(grouped, y) < 0.7


def test_folds_must_fit_the_prompts() -> None:
    x, y = np.eye(3), np.ones((3, 1))
    fitted = Fitted(fit_knn(x, y, 1), "knn", 1.0, {})
    for folds in (1, 4):
        with pytest.raises(ValueError, match="needs 2 to 3 folds"):
            cross_fit(x, y, fitted, ["a", "b", "c"], folds)


def test_out_of_fold_table_round_trips_and_knows_only_training_texts(tmp_path: Path) -> None:
    predictions = np.array([[0.2, 0.9], [0.7, 0.1]])
    table = OutOfFold.of(["first prompt", "second prompt"], predictions, folds=5)
    path = tmp_path / "a.npz"
    save(
        path,
        Artifact(fit_knn(np.eye(2), np.eye(2), 1), ("a", "b"), "e", 2, (None, None), {}, table),
    )
    loaded = load(path).out_of_fold
    assert loaded is not None and loaded.folds == 5
    assert loaded.lookup("second prompt") == pytest.approx([0.7, 0.1])
    assert loaded.lookup("a prompt it never saw") is None


def test_out_of_fold_lookup_ignores_white_space_and_old_tables_stay_exact(
    tmp_path: Path,
) -> None:
    # A JSONL made by hand kept a leading space and a CRLF the replayed CSV strips: an exact
    # digest missed every row, and calibration silently read the in-sample fit.
    predictions = np.array([[0.2, 0.9], [0.7, 0.1]])
    table = OutOfFold.of([" first prompt\r\n", "second  prompt"], predictions, folds=5)
    path = tmp_path / "a.npz"
    artifact = Artifact(
        fit_knn(np.eye(2), np.eye(2), 1), ("a", "b"), "e", 2, (None, None), {}, table
    )
    save(path, artifact)
    loaded = load(path).out_of_fold
    assert loaded is not None and loaded.spaced
    assert loaded.lookup("first prompt") == pytest.approx([0.2, 0.9])
    assert loaded.lookup("second prompt\n") == pytest.approx([0.7, 0.1])
    assert loaded.lookup("secondprompt") is None
    # An artifact written before (no `oof_spaced` in its header) holds exact digests.
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    header = json.loads(str(arrays["header"]))
    del header["oof_spaced"]
    arrays["header"] = np.array(json.dumps(header))
    arrays["oof_digests"] = np.frombuffer(
        text_digest("first prompt", spaced=False) + text_digest("x", spaced=False), dtype=np.uint8
    ).reshape(2, 16)
    np.savez(path, **arrays)
    old = load(path).out_of_fold
    assert old is not None and not old.spaced
    assert old.lookup("first prompt") == pytest.approx([0.2, 0.9])
    assert old.lookup(" first prompt") is None


def test_out_of_fold_table_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    table = OutOfFold.of(["a", "b"], np.array([[0.2, 0.9], [0.7, 0.1]]), folds=2)
    path = tmp_path / "a.npz"
    predictor = fit_knn(np.eye(2), np.eye(2), 1)
    save(path, Artifact(predictor, ("a", "b"), "e", 2, (None, None), {}, table))
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["oof_predictions"] = arrays["oof_predictions"][:, :1]  # one model's column lost
    np.savez(path, **arrays)
    with pytest.raises(ArtifactError, match=r"a\.npz: out-of-fold predictions do not fit 2"):
        load(path)


def _train(tmp_path: Path, *options: str) -> tuple[int, str, Path]:
    config = tmp_path / "models.yaml"
    config.write_text(LEARNED_MODELS)
    outcomes = tmp_path / "outcomes.jsonl"
    write_outcomes(outcomes)
    artifact = tmp_path / "router.npz"
    args = ["train", str(outcomes), "--embedder", "hash", "--config", str(config)]
    result = CliRunner().invoke(app, [*args, *options, "-o", str(artifact)])
    return result.exit_code, " ".join(result.output.split()), artifact


@pytest.fixture
def cross_fitted_router(tmp_path: Path) -> Path:
    code, output, artifact = _train(tmp_path, "--folds", "3")
    assert code == 0, output
    assert "each of the 60 training texts also has its prediction from the fit of the 2" in output
    return artifact


async def test_a_router_answers_its_training_prompts_out_of_fold(
    cross_fitted_router: Path, yard_of: Callable[[str], Yard]
) -> None:
    artifact = cross_fitted_router
    trained = load(artifact)
    assert trained.out_of_fold is not None and trained.meta["folds"] == 3
    async with yard_of(learned_config(artifact, 0.0)) as yard:
        seen = await yard.complete("front", "prove lemma 3 rigorously")
        unseen = await yard.complete("front", "prove lemma 300 rigorously")
    assert seen.decision is not None and unseen.decision is not None
    [record] = seen.decision.children[:1]
    assert record.kind == "embedder" and record.details == {"out_of_fold": True}
    assert record.reason.startswith("out-of-fold prediction: the last user message is a training")
    p = seen.decision.details["p_success"]
    assert [p["cheap"], p["strong"]] == pytest.approx(
        trained.out_of_fold.lookup("prove lemma 3 rigorously"), abs=1e-6
    )
    assert unseen.decision.children[0].reason == "embedded the last user message"


def test_train_refuses_folds_that_cannot_be(tmp_path: Path) -> None:
    code, output, _ = _train(tmp_path, "--folds", "1")
    assert code == 2 and "--folds must be 0 (off) or at least 2, not 1" in output
    code, output, _ = _train(tmp_path, "--folds", "61")
    assert code == 2 and "--folds 61 is more than the 60 prompts" in output


@pytest.fixture
def cross_fitted_check(tmp_path: Path) -> Path:
    outcomes = tmp_path / "answers.jsonl"
    checks.write_outcomes(outcomes)  # e.g. "add up list 7" answered "The total is 7, ..."
    config = tmp_path / "models.yaml"
    config.write_text(checks.MODELS)
    artifact = tmp_path / "check.npz"
    args = ["train", str(outcomes), "--embedder", "hash", "--config", str(config)]
    options = ["--features", "answer", "--folds", "4", "-o", str(artifact)]
    result = CliRunner().invoke(app, [*args, *options])
    assert result.exit_code == 0, result.output
    return artifact


async def test_a_check_answers_a_recorded_answer_out_of_fold(
    cross_fitted_check: Path, yard_of: Callable[[str], Yard]
) -> None:
    recorded = checks.cascade("steady", cross_fitted_check).replace("42, checked", "7, checked")
    async with yard_of(recorded) as yard:
        seen = await yard.complete("qa", "add up list 7")
        unseen = await yard.complete("qa", "add up list 77")
    assert seen.decision is not None and unseen.decision is not None
    seen_record = seen.decision.children[0].children[1]
    assert seen_record.reason.startswith("out-of-fold prediction: the answer is a training text")
    assert unseen.decision.children[0].children[1].reason == "embedded the answer"


async def test_an_evaluation_counts_the_predictions_made_out_of_fold(
    cross_fitted_router: Path, yard_of: Callable[[str], Yard]
) -> None:
    # Calibrating on the training data is only honest for the texts that match it exactly;
    # the report shows how many did, per embedder.
    items = [
        Item(id="seen", prompt="add 3 and 4"),
        Item(id="seen too", prompt="prove lemma 5 rigorously"),
        Item(id="reworded", prompt="Add 3 and 4."),
        Item(id="new", prompt="add 300 and 301"),
    ]
    async with yard_of(learned_config(cross_fitted_router, 0.0)) as yard:
        evaluation = await evaluate(yard, "front", items, ExactScorer())
    assert evaluation.report.nodes["front/hash"].details == {"out_of_fold": 0.5}


def test_eval_prints_the_embedders_out_of_fold_share_without_a_choice(
    cross_fitted_router: Path, tmp_path: Path
) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(learned_config(cross_fitted_router, 0.0))
    data = tmp_path / "set.jsonl"
    data.write_text('{"prompt": "add 3 and 4", "label": "7"}\n{"prompt": "add 300 and 301"}\n')
    result = CliRunner().invoke(app, ["eval", str(config), "front", "--data", str(data)])
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    assert "front/hash embedder out_of_fold≈0.5" in lines  # an embedder chooses nothing
    assert any(line.startswith("front router chose ") for line in lines)


def test_check_says_a_router_or_check_is_cross_fitted(
    cross_fitted_router: Path, cross_fitted_check: Path, write_config: Callable[[str], Path]
) -> None:
    router = write_config(learned_config(cross_fitted_router, 0.3), "router.yaml")
    result = CliRunner().invoke(app, ["check", str(router)])
    assert result.exit_code == 0, result.output
    assert "policy=learned" in result.output and "cross_fitted=3" in result.output
    cascade = write_config(checks.cascade("steady", cross_fitted_check), "cascade.yaml")
    result = CliRunner().invoke(app, ["check", str(cascade)])
    assert result.exit_code == 0, result.output
    assert "learned check of cheap (hash, cross-fitted in 4 folds)" in result.output
