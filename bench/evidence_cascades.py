"""RouterBench cascades through modelyard's own commands, over several splits.

For each task and seed: `modelyard split` halves the recordings by prompt, `modelyard calibrate`
chooses the cascade threshold on the first half (target: 95 % of the best single model) and
scores the choice and the whole frontier on the second. The config asks the checking models
together or in turn (`ask: in_turn`); both are run to show what asking in turn saves. Each
system is a config in bench/configs; systems on the same recordings share each seed's split.

    .venv/bin/python bench/evidence_cascades.py --seeds 5 --out bench/out/cascades   # ~3 min
    .venv/bin/python bench/evidence_cascades.py --systems winogrande winogrande-agree3
    .venv/bin/python bench/evidence_cascades.py --systems winogrande --ceiling   # + the bound

`--ceiling` adds, for Winogrande, an upper bound on what any rule reading Yi-34B's and Mixtral's
answers could gain over the random router (see `ceiling`).

Needs ../shared/data (or $MODELYARD_DATA).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
from pathlib import Path

from evidence_summary import figures  # bench/ is on the path when this runs as a script

from modelyard.evaluation.formats import load_jsonl
from modelyard.evaluation.frontier import aiq
from modelyard.patterns.normalise import choice

ROOT = Path(__file__).resolve().parent.parent
MODELYARD = str(Path(sys.executable).with_name("modelyard"))
DATA = {
    "arc": "routerbench-train/arc_challenge_train.csv",
    "winogrande": "routerbench-train/winograde_train.csv",
}
SYSTEMS = {  # name: (recordings, config in bench/configs)
    "arc": ("arc", "routerbench-arc-cascade.yaml"),
    "winogrande": ("winogrande", "routerbench-winogrande-cascade.yaml"),
    "winogrande-agree3": ("winogrande", "routerbench-winogrande-agree3.yaml"),
}
THRESHOLDS = "systems.main.stages.0.threshold=0:1:0.25"
STRONG = "gpt4"


def run(*args: str, ok: tuple[int, ...] = (0,)) -> str:
    done = subprocess.run([MODELYARD, *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode not in ok:
        raise SystemExit(f"modelyard {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def config(system: str, ask: str, out: Path) -> Path:
    text = (ROOT / "bench" / "configs" / SYSTEMS[system][1]).read_text()
    path = out / f"{system}-{ask}.yaml"
    path.write_text(text if ask == "in_turn" else text.replace("ask: in_turn", "ask: together"))
    return path


def split_of(data: str, seed: int, out: Path) -> Path:
    """The folder of `modelyard split`'s halves of recordings `data` for `seed` (made once)."""
    split = out / f"{data}-seed{seed}"
    if not (split / "test.jsonl").exists():
        run(
            "split", "routerbench", f"shared:{DATA[data]}", "--out", str(split), "--seed", str(seed)
        )
    return split


def one(
    system: str, seed: int, ask: str, out: Path, confidence: float | None = None
) -> dict[str, float | bool]:
    split = split_of(SYSTEMS[system][0], seed, out)
    held = ("--confidence", str(confidence)) if confidence is not None else ()
    report = json.loads(
        run(
            "calibrate", str(config(system, ask, out)), "main", "--format", "jsonl",
            "--data", str(split / "train.jsonl"), "--test-data", str(split / "test.jsonl"),
            "--target", "quality:0.95", *held, "--knob", THRESHOLDS, "--json",
            "--out", str(split / f"{system}-{ask}.calibrated.yaml"),
            ok=(0, 1),  # 1: the target was not met on the training half; still reported
        )
    )  # fmt: skip
    found = figures(report)
    assert found["strong"] == STRONG, (
        f"the most accurate model on calibration was {found['strong']}"
    )
    return {
        "met_on_train": report["met"],
        "threshold": report["chosen"]["values"]["systems.main.stages.0.threshold"],
        "quality": found["quality"],
        "cost": found["cost"],
        "aiq": found["aiq"]["system + singles"],
        "aiq_random": found["aiq"]["random"],
        "aiq_oracle": found["aiq"]["oracle"],
        "aiq_margin": found["aiq"]["system + singles"] - found["aiq"]["random"],
    }


CEILING_MODELS = ("zero-one-ai/Yi-34B-Chat", "mistralai/mixtral-8x7b-chat", "gpt-4-1106-preview")
# What a rule does with the answerer's choice: accept it, escalate, or ask the checker and then
# accept or escalate on each of its answers (A, B, unreadable).
ACTIONS = ("accept", "escalate", *itertools.product(("accept", "escalate"), repeat=3))


def ceiling(split: Path) -> float:
    """AIQ over the random router (both with the single models) of the best rules that read
    only Yi-34B's and Mixtral's choice letters, asked in turn, else GPT-4-Turbo: for each of
    Yi's answers A and B one of `ACTIONS` (100 rules; an unreadable answer escalates), no rule
    dearer than GPT-4 alone. Every rule is scored on the test half and their hull taken there,
    so the choice reads the labels: a bound on such policies, not one of them."""
    answerer, checker, strong = CEILING_MODELS
    items = [i.outcomes for i in load_jsonl(split / "test.jsonl").items]

    def letter(outcomes: dict, model: str) -> int:  # index into an action's (A, B, unreadable)
        return {"A": 0, "B": 1}.get(choice(outcomes[model].text) or "", 2)

    def point(rule: dict[int, object]) -> tuple[float, float]:
        cost = score = 0.0
        for o in items:
            action = rule.get(letter(o, answerer), "escalate")
            cost += o[answerer].cost or 0.0
            if isinstance(action, tuple):
                cost += o[checker].cost or 0.0
                action = action[letter(o, checker)]
            chosen = answerer if action == "accept" else strong
            cost += (o[strong].cost or 0.0) if chosen == strong else 0.0
            score += o[chosen].score or 0.0
        return cost / len(items), score / len(items)

    def alone(model: str) -> tuple[float, float]:
        outcomes = [o[model] for o in items]
        return (
            statistics.fmean(x.cost or 0.0 for x in outcomes),
            statistics.fmean(x.score or 0.0 for x in outcomes),
        )

    singles = [alone(m) for m in CEILING_MODELS]
    top = singles[-1][0]
    rules = [point({0: a, 1: b}) for a, b in itertools.product(ACTIONS, repeat=2)]
    system = aiq([p for p in rules if p[0] <= top] + singles, top)
    random = aiq(singles, top)
    assert system is not None and random is not None
    return system - random


def summary(rows: list[dict[str, float | bool]], key: str) -> str:
    values = [float(r[key]) for r in rows]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "cascades")
    parser.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--ceiling", action="store_true", help="also Winogrande's bound")
    parser.add_argument(
        "--confidence", type=float, help="calibrate's --confidence (the target held at a bound)"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, float | bool]]] = {}
    for system in args.systems:
        for ask in ("in_turn", "together"):
            rows = [one(system, seed, ask, args.out, args.confidence) for seed in range(args.seeds)]
            results[f"{system}/{ask}"] = rows
            print(
                f"{system:17s} {ask:8s} thresholds {[r['threshold'] for r in rows]} "
                f"quality {summary(rows, 'quality')} cost {summary(rows, 'cost')} "
                f"AIQ {summary(rows, 'aiq')} random {summary(rows, 'aiq_random')} "
                f"margin {summary(rows, 'aiq_margin')} "
                f"oracle {summary(rows, 'aiq_oracle')}",
                flush=True,
            )
    if args.ceiling:
        margins = [ceiling(split_of("winogrande", s, args.out)) for s in range(args.seeds)]
        print(
            f"winogrande ceiling: AIQ over random of the best Yi/Mixtral letter rules, chosen "
            f"on the scored half: {statistics.mean(margins):.4f} ± {statistics.stdev(margins):.4f}"
        )
    (args.out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
