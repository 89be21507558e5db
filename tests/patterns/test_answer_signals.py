"""Answer signals: deterministic facts about an answer (is one stated, is its arithmetic right)
that a learned check reads beside the embedding, computed the same way in training and live."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from modelyard.cli import app
from modelyard.errors import ConfigError
from modelyard.patterns.artifact import ArtifactError, load, save
from modelyard.patterns.signals import arithmetic, equations, signal_set, worked_math
from modelyard.yard import Yard
from tests.patterns.conftest import PRICE

NAMES = signal_set("worked_math").names


def signals(answer: str) -> dict[str, float]:
    return dict(zip(NAMES, worked_math(answer), strict=True))


@pytest.mark.parametrize(
    ("expression", "value"),
    [("$1,200 x 3", 3600.0), ("20% * 50", 10.0), ("(4+2)/3", 2.0), ("2^3 - -1", 9.0)],
)
def test_written_arithmetic_is_evaluated(expression: str, value: float) -> None:
    assert arithmetic(expression) == pytest.approx(value)


@pytest.mark.parametrize(
    "expression", ["__import__('os').getcwd()", "9**9**9", "1/0", "len('abc')", "3 +"]
)
def test_anything_but_plain_arithmetic_is_refused_not_run(expression: str) -> None:
    with pytest.raises(ValueError):
        arithmetic(expression)


def test_a_sound_worked_answer_has_no_error_and_a_whole_stated_answer() -> None:
    found = signals(
        "She has 16 - 3 = 13 eggs, then 13 - 4 = 9.\n"
        "She sells them for 9 * $2 = $<<9*2=18>>18.\n#### 18"
    )
    assert found["final_answer"] == found["whole_number"] == 1.0
    assert found["calculation_error"] == found["equation_error"] == found["hedging"] == 0.0
    assert 0.0 < found["length"] < 0.1


def test_wrong_arithmetic_is_caught_in_calculator_notes_and_in_prose() -> None:
    assert signals("9 * 2 = <<9*2=19>>19\n#### 19")["calculation_error"] == 1.0
    assert signals("She has 16 - 3 = 12 eggs.\n#### 12")["equation_error"] == 1.0
    # a chain is read whole: 2 * 3 * 4 is 24, not "3 * 4 = 24" wrong
    assert signals("2 * 3 * 4 = 24 boxes.\n#### 24")["equation_error"] == 0.0


def test_an_equation_is_the_arithmetic_just_before_its_claimed_value() -> None:
    assert equations("16 - 3 = 13 - 4 = 9") == [("16 - 3", "13"), ("13 - 4", "9")]
    assert equations("of 3, 4 + 5 = 9 and $1,200 x 3 = $3,600.") == [
        ("4 + 5", "9"),
        ("$1,200 x 3", "$3,600"),
    ]
    assert equations("the box 3 + 4 = 8; version 2 = 3") == [("3 + 4", "8")]


def test_hostile_answers_are_read_in_bounded_time() -> None:
    """Signals run on live answers: no input may make a pattern backtrack without limit."""
    assert len(equations("1 + 1 = 2 " * 1000)) == 100
    assert worked_math("(1 + " * 20_000)[:4] == (0.0, 0.0, 0.0, 0.0)
    assert worked_math("<<" + "1+" * 20_000)[2] == 0.0
    assert worked_math("<<1+1=2>>" * 50_000 + "<<1+1=3>>")[2] == 0.0  # the first 100 notes
    assert worked_math("1 + " * 20_000 + "1 = 4")[3] == 1.0


def test_no_stated_answer_a_fraction_and_second_guessing_are_flagged() -> None:
    trailing = signals("The value after repairs is 80,000 + 50,000 = $130,00")
    assert trailing["final_answer"] == trailing["whole_number"] == 0.0
    half = signals("So the answer is 2.5 bolts.")
    assert half["final_answer"] == 1.0 and half["whole_number"] == 0.0
    assert signals("However, you can't have half a bolt.\n#### 3")["hedging"] == 1.0


def test_an_unknown_signal_set_is_named_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="no answer signals called 'vibes'; known: worked_math"):
        signal_set("vibes")


MODELS = f"""
models:
  careful:
    local: {{type: fake, default: "We need 17 * 23 = 391 tiles.\\n#### 391"}}
    {PRICE}
  sloppy:
    local: {{type: fake, default: "We need 17 * 23 = 401 tiles.\\n#### 401"}}
    {PRICE}
  big:
    local: {{type: fake, default: "391"}}
    {PRICE}
embedders:
  hash: {{local: {{type: hashing, dimensions: 256}}}}
"""


def write_outcomes(path: Path) -> None:
    """The cheap model was right exactly when its multiplication was: right and wrong answers
    differ only in their digits, which an embedding of character trigrams cannot check."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(60):
        a, b = (int(v) for v in rng.integers(11, 99, size=2))
        right = bool(i % 2)
        product = a * b if right else a * b + int(rng.integers(1, 30))
        lines.append(
            {
                "prompt": f"Tiles for a {a} by {b} floor (room {i})?",
                "model": "cheap",
                "correct": right,
                "response": f"We need {a} * {b} = {product} tiles.\n#### {product}",
            }
        )
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")


def invoke_train(tmp_path: Path, *extra: str) -> tuple[int, str, Path]:
    outcomes = tmp_path / "outcomes.jsonl"
    write_outcomes(outcomes)
    config = tmp_path / "models.yaml"
    config.write_text(MODELS)
    artifact = tmp_path / f"check{len(extra)}.npz"
    options = ["--embedder", "hash", "--config", str(config), "--features", "answer", *extra]
    result = CliRunner().invoke(app, ["train", str(outcomes), *options, "-o", str(artifact)])
    return result.exit_code, " ".join(result.output.split()), artifact


@pytest.fixture(scope="module")
def check(tmp_path_factory: pytest.TempPathFactory) -> Path:
    code, output, artifact = invoke_train(
        tmp_path_factory.mktemp("signals"), "--signals", "worked_math"
    )
    assert code == 0, output
    assert "reads worked_math answer signals beside the embedding: final_answer," in output
    return artifact


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same check without the signals: the embedding alone."""
    code, output, artifact = invoke_train(tmp_path_factory.mktemp("plain"))
    assert code == 0, output
    return artifact


def cascade(first: str, artifact: Path) -> str:
    return MODELS + (
        "systems:\n  qa:\n    type: cascade\n    stages:\n"
        f"      - model: {first}\n        threshold: 0.5\n"
        f"        estimator: {{type: learned, artifact: {artifact}, embedder: hash, "
        "candidate: cheap}\n"
        "      - model: big\n"
    )


async def confidence(yard_of: Callable[[str], Yard], first: str, artifact: Path) -> float:
    async with yard_of(cascade(first, artifact)) as yard:
        response = await yard.complete("qa", "Tiles for a 17 by 23 floor (new room)?")
    assert response.decision is not None
    reason = response.decision.children[0].reason
    return float(reason.split("P(correct) ")[1].split()[0])


async def test_the_check_reads_the_arithmetic_an_embedding_cannot(
    check: Path, plain: Path, yard_of: Callable[[str], Yard]
) -> None:
    right, wrong = (
        await confidence(yard_of, "careful", check),
        await confidence(yard_of, "sloppy", check),
    )
    assert right >= 0.5 > wrong
    plain_gap = await confidence(yard_of, "careful", plain) - await confidence(
        yard_of, "sloppy", plain
    )
    assert right - wrong > plain_gap + 0.2


def test_the_artifact_names_its_signals_and_the_check_says_it_reads_them(
    check: Path, yard_of: Callable[[str], Yard]
) -> None:
    artifact = load(check)
    assert artifact.signals is not None and artifact.signals.name == "worked_math"
    assert artifact.meta["signal_names"] == list(NAMES)
    assert artifact.dimensions == 256
    assert artifact.predictor.predict(np.ones(256 + len(NAMES)) / 16).shape == (1,)
    yard = yard_of(cascade("careful", check))
    described = json.dumps(yard.systems["qa"].describe())
    assert "learned check of cheap (hash + worked_math signals)" in described


def test_signals_this_modelyard_does_not_compute_are_refused(
    tmp_path: Path, check: Path, config_error: Callable[[str], ConfigError]
) -> None:
    artifact = load(check)
    renamed = tmp_path / "renamed.npz"
    save(renamed, artifact)
    with np.load(renamed) as data:
        arrays = {name: data[name] for name in data.files}
    header = json.loads(str(arrays["header"]))
    for change, message in (
        ({"signals": "vibes"}, "trained with answer signals this modelyard lacks"),
        ({"signal_names": ["final_answer"]}, "retrain it with `modelyard train`"),
    ):
        arrays["header"] = np.array(json.dumps({**header, **change}))
        with renamed.open("wb") as handle:
            np.savez_compressed(handle, **arrays)
        with pytest.raises(ArtifactError, match=message):
            load(renamed)
        assert message in str(config_error(cascade("careful", renamed)))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--signals", "vibes"), "--signals: no answer signals called 'vibes'; known: worked_math"),
        (
            ("--signals", "worked_math", "--features", "prompt"),
            "--signals reads answers: it needs --features answer",
        ),
    ],
)
def test_train_refuses_signals_it_cannot_compute(
    tmp_path: Path, extra: tuple[str, ...], message: str
) -> None:
    code, output, artifact = invoke_train(tmp_path, *extra)
    assert code == 2
    assert message in output
    assert not artifact.exists()
