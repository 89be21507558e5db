"""The gate fails a candidate worse by construction; history keeps versions; rollback restores."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from modelyard.cli import app
from modelyard.errors import ConfigError
from modelyard.evaluation.gate import Tolerances, judge
from modelyard.evaluation.history import ConfigHistory
from modelyard.evaluation.report import Tally, summarize
from modelyard.evaluation.runner import ItemResult
from tests.evaluation.conftest import csv_slice, own_rows, write_jsonl

ARC = "routerbench-train/arc_challenge_train.csv"
CONFIG = """
models:
  answer:
    local: {{type: replay, data: "{path}", format: routerbench, model: {model}}}
systems:
  main: {{type: fallback, chain: [answer]}}
"""
runner = CliRunner()


@pytest.fixture
def arc(sliced: Callable[[str, int], Path]) -> Path:
    return sliced(ARC, 30)


def _gate(baseline: Path, candidate: Path, data: Path, *extra: str) -> tuple[int, dict]:
    result = runner.invoke(
        app,
        [
            "gate",
            str(baseline),
            str(candidate),
            "--data",
            str(data),
            "--format",
            "routerbench",
            "--json",
            *extra,
        ],
    )
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else {}


def test_gate_fails_a_weaker_model_with_a_clear_reason(
    arc: Path, write_config: Callable[..., Path]
) -> None:
    base = write_config(CONFIG.format(path=arc, model="gpt-4-1106-preview"), "base.yaml")
    cand = write_config(CONFIG.format(path=arc, model="mistralai/mistral-7b-chat"), "cand.yaml")
    code, report = _gate(base, cand, arc)
    assert code == 1 and not report["passed"]
    assert any(v.startswith("accuracy fell") for v in report["violations"])
    assert report["broken"]


def _plotted(page: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The data and layout of the first plotly figure embedded in `page`."""
    decoder = json.JSONDecoder()
    at = page.index("Plotly.newPlot(")
    at = page.index(",", page.index('"', at) + 1) + 1  # past the div's id
    data, at = decoder.raw_decode(page, page.index("[", at))
    layout, _ = decoder.raw_decode(page, page.index("{", at))
    return data, layout


@pytest.mark.parametrize(
    ("candidate", "verdict", "colour"),
    [
        ("mistralai/mistral-7b-chat", "FAILED", "#b00020"),
        ("gpt-4-1106-preview", "PASSED", "#1b7a1b"),
    ],
)
def test_the_gate_report_charts_both_runs_against_the_limits(
    arc: Path,
    write_config: Callable[..., Path],
    tmp_path: Path,
    candidate: str,
    verdict: str,
    colour: str,
) -> None:
    base = write_config(CONFIG.format(path=arc, model="gpt-4-1106-preview"), "base.yaml")
    cand = write_config(CONFIG.format(path=arc, model=candidate), "cand.yaml")
    page = tmp_path / "gate.html"
    _, report = _gate(base, cand, arc, "--html", str(page))
    data, layout = _plotted(page.read_text())
    points = {t["name"]: t for t in data if t["type"] == "scatter"}
    for side in ("baseline", "candidate"):
        assert points[side]["x"] == [report[side]["cost_per_item"]]
        assert points[side]["y"] == [report[side]["accuracy"]]
    assert points["candidate"]["marker"]["color"] == colour
    latency = next(t for t in data if t["type"] == "bar")
    assert latency["y"] == [
        report["baseline"]["latency_p95_ms"],
        report["candidate"]["latency_p95_ms"],
    ]
    limits = report["limits"]
    region = next(s for s in layout["shapes"] if s["type"] == "rect")
    assert (region["x1"], region["y0"]) == (limits["cost_per_item"], limits["accuracy"])
    lines = {s.get("y0") for s in layout["shapes"] if s["type"] == "line"}
    assert limits["latency_p95_ms"] in lines
    assert verdict in layout["title"]["text"]


def test_gate_names_the_items_the_candidate_broke(
    arc: Path, write_config: Callable[..., Path]
) -> None:
    base = write_config(CONFIG.format(path=arc, model="gpt-4-1106-preview"), "base.yaml")
    cand = write_config(CONFIG.format(path=arc, model="mistralai/mistral-7b-chat"), "cand.yaml")
    _, report = _gate(base, cand, arc)
    args = ["gate", str(base), str(cand), "--data", str(arc), "--format", "routerbench"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    shown = " ".join(result.output.split())
    assert f"broken: {', '.join(report['broken'][:3])}" in shown


def test_gate_fails_a_costlier_candidate(arc: Path, write_config: Callable[..., Path]) -> None:
    base = write_config(CONFIG.format(path=arc, model="zero-one-ai/Yi-34B-Chat"), "base.yaml")
    cand = write_config(CONFIG.format(path=arc, model="gpt-4-1106-preview"), "cand.yaml")
    code, report = _gate(base, cand, arc, "--max-accuracy-drop", "1")
    assert code == 1 and any(v.startswith("cost per item rose") for v in report["violations"])


def test_gate_shows_a_candidate_part_that_fails_where_its_fallback_answers(
    arc: Path, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    # The candidate's first model holds 10 of the 30 prompts; its fallback (the baseline's
    # model) answers the rest, so accuracy, cost and failed items are the baseline's.
    few = csv_slice(arc, tmp_path / "few.csv", 10)
    base = write_config(CONFIG.format(path=arc, model="gpt-4-1106-preview"), "base.yaml")
    cand = write_config(
        f"""
models:
  first: {{local: {{type: replay, data: "{few}", format: routerbench, model: gpt-4-1106-preview}}}}
  answer: {{local: {{type: replay, data: "{arc}", format: routerbench, model: gpt-4-1106-preview}}}}
systems:
  main: {{type: fallback, chain: [first, answer]}}
""",
        "cand.yaml",
    )
    result = runner.invoke(
        app, ["gate", str(base), str(cand), "--data", str(arc), "--format", "routerbench"]
    )
    assert result.exit_code == 0, result.output
    assert "main baseline chose answer: 30; candidate chose answer: 20, first: 10" in " ".join(
        result.output.split()
    )


def test_gate_passes_an_equal_candidate_and_applies_it(
    arc: Path, write_config: Callable[..., Path]
) -> None:
    base = write_config(CONFIG.format(path=arc, model="gpt-4-1106-preview"), "base.yaml")
    cand = write_config(CONFIG.format(path=arc, model="gpt-4-1106-preview") + "# new\n", "c.yaml")
    result = runner.invoke(
        app,
        ["gate", str(base), str(cand), "--data", str(arc), "--format", "routerbench", "--apply"],
    )
    assert result.exit_code == 0, result.output
    assert base.read_text().endswith("# new\n")
    assert len(ConfigHistory(base).entries()) == 2


def test_an_equal_candidate_breaks_nothing_when_two_items_share_an_id(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    header = "sample_id,prompt,eval_name,m,m|model_response,m|total_cost\n"
    data = tmp_path / "rb.csv"
    rows = "a,['Q1'],arc,,,\na,['Q2'],arc,1,['A'],0.1\nb,['Q3'],arc,1,['A'],0.1\n"
    data.write_text(header + rows)
    base = write_config(CONFIG.format(path=data, model="m"), "base.yaml")
    cand = write_config(CONFIG.format(path=data, model="m"), "cand.yaml")
    code, report = _gate(base, cand, data)
    assert code == 0 and report["broken"] == [] and report["fixed"] == []


def test_rollback_restores_the_previous_applied_version(
    write_config: Callable[..., Path],
) -> None:
    first = "models:\n  a:\n    local: {type: fake}\n"
    path = write_config(first)
    history = ConfigHistory(path)
    history.apply(first.replace("fake}", "fake, default: two}"), "second")
    history.apply(first.replace("fake}", "fake, default: three}"), "third")
    result = runner.invoke(app, ["rollback", str(path)])
    assert result.exit_code == 0, result.output
    assert "default: two" in path.read_text()
    history.rollback(version=history.entries()[0].version)
    assert path.read_text() == first


def test_history_keeps_only_the_last_n(write_config: Callable[..., Path]) -> None:
    path = write_config("models:\n  a:\n    local: {type: fake}\n")
    history = ConfigHistory(path, keep=3)
    for n in range(5):
        history.apply(f"models:\n  a:\n    local: {{type: fake, default: v{n}}}\n", f"v{n}")
    entries = history.entries()
    assert len(entries) == 3 and entries[-1].note == "v4"
    assert len(list(history.folder.glob("*.yaml"))) == 3


def test_applying_an_invalid_config_changes_nothing(write_config: Callable[..., Path]) -> None:
    text = "models:\n  a:\n    local: {type: fake}\n"
    path = write_config(text)
    with pytest.raises(ConfigError):
        ConfigHistory(path).apply("models:\n  a:\n    local: {type: nope}\n", "bad")
    assert path.read_text() == text


def test_rolling_back_past_the_first_version_is_refused(write_config: Callable[..., Path]) -> None:
    path = write_config("models:\n  a:\n    local: {type: fake}\n")
    result = runner.invoke(app, ["rollback", str(path)])
    assert result.exit_code == 2 and "cannot roll back" in result.output


def test_gate_refuses_when_no_item_has_a_label_and_names_the_fields_seen(
    own: Callable[..., Path], tmp_path: Path
) -> None:
    base, cand = own(name="base.yaml"), own(chain="strong", name="cand.yaml")
    golden = write_jsonl(
        tmp_path / "golden.jsonl",
        [{"id": r["id"], "prompt": r["prompt"], "gold": r["label"]} for r in own_rows()[::2]],
    )
    args = ["gate", str(base), str(cand), "--data", str(golden), "--scorer", "number"]
    result = runner.invoke(app, [*args, "--max-cost-increase", "100"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "cannot compare accuracy: baseline: no item has a label" in text
    assert "4 of 4 items have no 'label' or 'answer' field; other fields: gold" in text
    assert "gate passed" not in text


def test_a_non_finite_accuracy_cannot_be_judged() -> None:
    report = replace(summarize("main", []), n=1, scored=1, accuracy=float("nan"))
    fine = replace(report, accuracy=1.0)
    with pytest.raises(ConfigError, match="candidate: its accuracy is nan"):
        judge(fine, report, Tally(), Tally(), Tolerances())


def _versions(path: Path) -> tuple[ConfigHistory, list[str]]:
    """A history with three applied versions of `path`: v1 (the file as it was), v2, v3."""
    texts = [f"models:\n  a:\n    local: {{type: fake, default: v{n}}}\n" for n in (1, 2, 3)]
    path.write_text(texts[0])
    history = ConfigHistory(path)
    for text in texts[1:]:
        history.apply(text, "apply")
    return history, texts


def test_consecutive_rollbacks_walk_back_instead_of_toggling(
    write_config: Callable[..., Path],
) -> None:
    path = write_config("")
    _, (v1, v2, _v3) = _versions(path)
    assert runner.invoke(app, ["rollback", str(path)]).exit_code == 0
    assert path.read_text() == v2
    assert runner.invoke(app, ["rollback", str(path)]).exit_code == 0
    assert path.read_text() == v1
    result = runner.invoke(app, ["rollback", str(path)])
    assert result.exit_code == 2 and "cannot roll back" in result.output
    assert path.read_text() == v1


def test_rollback_after_a_new_apply_returns_to_what_was_deployed_before_it(
    write_config: Callable[..., Path],
) -> None:
    path = write_config("")
    history, (_v1, v2, _v3) = _versions(path)
    history.rollback()  # v3 -> v2
    history.apply(v2.replace("v2", "v4"), "apply")
    history.rollback()
    assert path.read_text() == v2  # not v3, which was rolled away from


def test_rollback_refuses_to_overwrite_a_hand_edit_unless_forced_and_keeps_it(
    write_config: Callable[..., Path],
) -> None:
    path = write_config("")
    history, (_v1, _v2, v3) = _versions(path)
    edited = v3 + "# on-call hotfix\n"
    path.write_text(edited)
    refused = runner.invoke(app, ["rollback", str(path)])
    assert refused.exit_code == 2 and "was edited since modelyard wrote" in refused.output
    assert path.read_text() == edited
    forced = runner.invoke(app, ["rollback", str(path), "--force"])
    assert forced.exit_code == 0, forced.output
    assert path.read_text() == v3  # one step back from the edited file
    assert edited in [history.text(e) for e in history.entries()]


def test_gate_apply_refuses_a_hand_edited_baseline_before_running(
    own: Callable[..., Path],
) -> None:
    base, cand = own(name="base.yaml"), own(chain="strong", name="cand.yaml")
    ConfigHistory(base).apply(base.read_text() + "# applied\n", "apply")
    edited = base.read_text() + "# hand edit\n"
    base.write_text(edited)
    args = ["gate", str(base), str(cand), "--data", str(base.with_suffix(".jsonl"))]
    args += ["--format", "jsonl", "--max-cost-increase", "100", "--apply"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "--force" in refused.output
    assert "gate passed" not in refused.output and base.read_text() == edited
    forced = runner.invoke(app, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    assert base.read_text() == cand.read_text()
    assert ConfigHistory(base).entries()[-2].note.startswith("edited by hand")


def test_an_unknown_system_is_a_usage_error_not_a_failed_gate(own: Callable[..., Path]) -> None:
    base, cand = own(name="base.yaml"), own(chain="strong", name="cand.yaml")
    args = ["gate", str(base), str(cand), "--data", str(base.with_suffix(".jsonl"))]
    result = runner.invoke(app, [*args, "--format", "jsonl", "--system", "nope"])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "HTTP" not in result.output
    assert "no system or model named 'nope'; available: main, strong, weak" in result.output


@pytest.mark.parametrize("option", ["--max-accuracy-drop", "--max-cost-increase"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_gate_rejects_a_non_finite_tolerance(
    own: Callable[..., Path], option: str, value: str
) -> None:
    base, cand = own(name="base.yaml"), own(chain="strong", name="cand.yaml")
    args = ["gate", str(cand), str(base), "--data", str(base.with_suffix(".jsonl"))]
    result = runner.invoke(app, [*args, "--format", "jsonl", option, value])
    assert result.exit_code == 2 and "must be a finite number" in result.output


@pytest.mark.parametrize(
    ("recorded", "reason"),
    [
        # Recorded when it loaded; it defines nothing now.
        ("models: {}\n", "defines no models"),
        # It parses, but the gateway's reload (and its next start) would refuse it: a system
        # names a model that is not defined.
        (
            "models:\n  a:\n    local: {type: fake}\nsystems:\n  s: {type: fallback, chain: [b]}\n",
            "unknown model or system 'b'",
        ),
    ],
)
def test_rollback_refuses_a_version_that_no_longer_loads(
    write_config: Callable[..., Path], recorded: str, reason: str
) -> None:
    path = write_config(recorded)
    history = ConfigHistory(path)
    good = "models:\n  a:\n    local: {type: fake, default: v2}\n"
    history.apply(good, "apply")
    result = runner.invoke(app, ["rollback", str(path)])
    assert result.exit_code == 2 and reason in result.output
    assert path.read_text() == good


def test_apply_refuses_a_config_whose_names_do_not_resolve(
    write_config: Callable[..., Path],
) -> None:
    text = "models:\n  a:\n    local: {type: fake}\n"
    path = write_config(text)
    with pytest.raises(ConfigError, match="unknown model or system 'b'"):
        ConfigHistory(path).apply(text + "systems:\n  s: {type: fallback, chain: [b]}\n", "bad")
    assert path.read_text() == text


def _answered(item: str, drift: str | None) -> ItemResult:
    return ItemResult(
        id=item,
        split=None,
        label="A",
        status="scored",
        score=1.0,
        answer="A",
        parsed="A",
        cost=0.001,
        scorer_cost=0.0,
        latency_ms=10.0,
        model="mini",
        provider_model="gpt-4o-mini-2024-09-01" if drift else "gpt-4o-mini-2024-07-18",
        drift=drift,
        error=None,
        decision=None,
    )


def test_a_candidate_answered_by_a_model_it_does_not_pin_fails_unless_allowed() -> None:
    moved = "provider answered gpt-4o-mini-2024-09-01, pinned gpt-4o-mini-2024-07-18"
    base = [_answered("1", None), _answered("2", None)]
    cand = [_answered("1", moved), _answered("2", None)]
    base_report, cand_report = summarize("main", base), summarize("main", cand)
    base_tally, cand_tally = Tally.of(base), Tally.of(cand)
    result = judge(base_report, cand_report, base_tally, cand_tally, Tolerances())
    (violation,) = result.violations
    assert "models it does not pin (mini: " + moved + ", 1 item)" in violation
    assert "--allow-drift" in violation
    allowed = judge(base_report, cand_report, base_tally, cand_tally, Tolerances(allow_drift=True))
    assert allowed.passed and f"mini: {moved}" in allowed.model_changes


def test_a_gate_asking_a_gain_says_accuracy_did_not_rise_when_it_held(
    arc: Path, write_config: Callable[..., Path]
) -> None:
    base = write_config(CONFIG.format(path=arc, model="gpt-4-1106-preview"), "base.yaml")
    code, report = _gate(base, base, arc, "--max-accuracy-drop", "-0.05")
    assert code == 1
    assert any(
        v.startswith("accuracy did not rise") and "a gain of 5.00% asked" in v
        for v in report["violations"]
    ), report["violations"]


def test_a_candidate_that_unpins_a_model_id_passes_with_a_warning_naming_it(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    # The alias answers as the dated id the baseline pins today, so the scores are equal and
    # nothing drifts; the gate is where a change is reviewed, and must say the pin is gone.
    from tests.fakes.openai_server import FakeOpenAI

    data = tmp_path / "golden.jsonl"
    data.write_text(
        "".join(f'{{"prompt": "item {i}", "label": "Echo: item {i}"}}\n' for i in range(3))
    )
    with FakeOpenAI().running() as fake:
        text = (
            f"providers:\n  oa: {{type: openai, api_key: sk-x, base_url: '{fake.url}/v1'}}\n"
            "models:\n  mini: {provider: oa, id: MODEL, price: {input: 1, output: 1}}\n"
            "systems:\n  main: {type: fallback, chain: [mini]}\n"
        )
        base = write_config(text.replace("MODEL", "gpt-4o-mini-2024-07-18"), "base.yaml")
        cand = write_config(text.replace("MODEL", "gpt-4o-mini"), "cand.yaml")
        result = runner.invoke(app, ["gate", str(base), str(cand), "--data", str(data)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "candidate: model 'mini': id 'gpt-4o-mini' is an OpenAI alias" in said


def test_apply_and_rollback_keep_the_config_files_permissions(
    write_config: Callable[..., Path],
) -> None:
    # An api_key written inline: a file its owner alone could read must stay so.
    path = write_config("")
    history, (v1, _v2, _v3) = _versions(path)
    path.chmod(0o600)
    history.apply(v1.replace("v1", "v4"), "apply")
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o640)
    history.rollback()
    assert path.stat().st_mode & 0o777 == 0o640
    assert not list(path.parent.glob(f".{path.name}.tmp-*"))


def test_a_rollback_never_prunes_the_versions_deployed_below_it(
    write_config: Callable[..., Path],
) -> None:
    """With `keep` full, the rollback's own entry must push out the version rolled away from,
    not the oldest one still deployed: two rollbacks go two versions back."""
    path = write_config("")
    texts = [f"models:\n  a:\n    local: {{type: fake, default: v{n}}}\n" for n in range(1, 6)]
    path.write_text(texts[0])
    history = ConfigHistory(path, keep=3)
    for text in texts[1:]:
        history.apply(text, "apply")  # the last 3 kept: v3, v4, v5
    history.rollback()
    assert path.read_text() == texts[3]
    history.rollback()
    assert path.read_text() == texts[2]
    assert len(history.entries()) == 3
    assert len(list(history.folder.glob("*.yaml"))) == 3


def test_rollback_to_a_prefix_of_two_versions_names_both_and_changes_nothing(
    write_config: Callable[..., Path],
) -> None:
    path = write_config("")
    history, (_v1, _v2, v3) = _versions(path)
    with pytest.raises(ConfigError, match="matches 3 versions") as caught:
        history.rollback(version="")
    for entry in history.entries():
        assert entry.version in str(caught.value)
    assert path.read_text() == v3


def test_the_history_folder_and_the_modelyard_folder_it_makes_are_this_users_only(
    write_config: Callable[..., Path],
) -> None:
    # mkdir(parents=True) made the parents with the umask's mode: .modelyard came out 0755,
    # and the gateway's next start warned of it.
    path = write_config("")
    history, _ = _versions(path)
    modelyard = path.parent / ".modelyard"
    for folder in (modelyard, modelyard / "history", history.folder):
        assert folder.stat().st_mode & 0o777 == 0o700, folder


def test_history_of_a_config_never_applied_says_what_records_versions(
    write_config: Callable[[str], Path],
) -> None:
    """An empty table had been printed, leaving a user to guess whether the history was lost."""
    path = write_config("models:\n  a: {local: {type: fake}}\n")
    result = CliRunner().invoke(app, ["history", str(path)])
    assert result.exit_code == 0, result.output
    assert "no version of" in result.stdout and "recorded yet" in result.stdout
    assert "gate --apply" in result.stdout and "calibrate --write" in result.stdout


def test_a_replayed_answer_recorded_from_another_model_is_drift(
    own: Callable[..., Path], tmp_path: Path
) -> None:
    # Recordings of your own traffic say which model the provider really answered with; a
    # candidate replaying answers GPT-4 gave as 0125 under a config naming 1106 passed the gate.
    moved = [
        {**row, "provider_model": "gpt-4-0125-preview"} if row["model"] == "strong" else row
        for row in own_rows()
    ]
    base = own(chain="strong", name="base.yaml")
    cand = own(moved, chain="strong", name="cand.yaml")
    data = tmp_path / "base.jsonl"
    args = ["gate", str(base), str(cand), "--data", str(data), "--format", "jsonl", "--json"]
    result = runner.invoke(app, args)
    report = json.loads(result.stdout)
    assert result.exit_code == 1, result.output
    drift = "strong: pinned 'strong' but the provider reported 'gpt-4-0125-preview'"
    (violation,) = report["violations"]
    assert f"models it does not pin ({drift}, 4 items)" in violation
    assert runner.invoke(app, [*args, "--allow-drift"]).exit_code == 0
    assert (
        runner.invoke(
            app, ["gate", str(base), str(base), "--data", str(data), "--format", "jsonl"]
        ).exit_code
        == 0
    )
