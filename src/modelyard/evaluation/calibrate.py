"""Calibration: search a system's knobs on a training split to meet a target, then report the
whole cost-quality frontier on a separate test split.

Targets: `quality:F` — at least F × the best single model's training accuracy at the lowest
cost; `budget:C` — the best accuracy at no more than C USD per item; `quality:F,cost:S` (or
`quality:F,budget:C`) — that quality at no more than S × the best single model's cost per item
(or C USD), the most accurate setting within the ceiling when none reaches it. Every candidate
config is the original text with the knob values written in (`knobs.set_value`), built and
run over the training items; the training-Pareto settings are then run on the test items, next
to every single model, the random router and the oracle. Labels are read only by scorers, after
answers exist, and test labels are never read before the choice is made.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from modelyard.config.loader import LoadedConfig, Loc, load_config, parse
from modelyard.config.resources import Resources
from modelyard.errors import ConfigError
from modelyard.evaluation.dataset import Item
from modelyard.evaluation.evaluate import Evaluation, evaluate, leaf_models
from modelyard.evaluation.frontier import Point
from modelyard.evaluation.isolation import build_for_evaluation
from modelyard.evaluation.knobs import Knob, apply_values
from modelyard.evaluation.references import Frontier, build_frontier
from modelyard.evaluation.report import EvalReport, accuracy_unknown
from modelyard.evaluation.scorers import Scorer
from modelyard.yard import Yard

Progress = Callable[[str, int, int], None]
"""(phase, done, total)."""


@dataclass(frozen=True, slots=True)
class Target:
    """What calibration aims for: a quality or a budget, and with a quality optionally a cost
    ceiling (`quality:1.0,cost:0.2`: the best single model's accuracy at no more than a fifth
    of its cost per item; `quality:0.95,budget:0.002`: at no more than 0.002 USD an item)."""

    kind: Literal["quality", "budget"]
    value: float
    ceiling: float | None = None
    """The most a setting may cost per item, in USD or as a share of the reference model's."""
    ceiling_kind: Literal["cost", "budget"] | None = None
    """`cost`: `ceiling` is a share of the best single model's cost; `budget`: USD."""

    @classmethod
    def parse(cls, text: str) -> Target:
        """`quality:0.95`, `budget:0.002`, or a quality with a ceiling: `quality:1.0,cost:0.2`
        (a share of the best single model's cost per item) or `quality:0.95,budget:0.002`."""
        head, comma, rest = text.partition(",")
        kind, number = _target_part(head)
        if kind == "quality" and 0 < number <= 2 and not comma:
            return cls("quality", number)
        if kind == "budget" and number >= 0 and not comma:
            return cls("budget", number)
        if kind == "quality" and 0 < number <= 2:
            cap_kind, cap = _target_part(rest)
            if cap_kind == "cost" and cap > 0:
                return cls("quality", number, cap, "cost")
            if cap_kind == "budget" and cap >= 0:
                return cls("quality", number, cap, "budget")
        raise ConfigError(
            f"invalid target {text!r}; use quality:F (e.g. quality:0.95, a fraction of the best "
            "single model's accuracy), budget:USD_PER_ITEM, or a quality with a cost ceiling: "
            "quality:F,cost:S (S a share of the best single model's cost per item, e.g. "
            "quality:1.0,cost:0.2) or quality:F,budget:USD_PER_ITEM"
        )

    def ceiling_usd(self, reference_cost: float) -> float | None:
        """The ceiling in USD per item, given the best single model's cost per item."""
        if self.ceiling is None:
            return None
        return self.ceiling * reference_cost if self.ceiling_kind == "cost" else self.ceiling

    def __str__(self) -> str:
        cap = "" if self.ceiling is None else f",{self.ceiling_kind}:{self.ceiling:g}"
        return f"{self.kind}:{self.value:g}{cap}"


def _target_part(text: str) -> tuple[str, float]:
    """`name:number` as (name, number); the number is -1 when it is not one."""
    kind, _, value = text.strip().partition(":")
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    return kind, number if math.isfinite(number) else -1.0


@dataclass(slots=True, kw_only=True)
class Trial:
    """One setting of the knobs and how it did."""

    values: dict[str, Any]
    text: str
    train: EvalReport
    test: EvalReport | None = None
    scores: dict[str, float] = field(default_factory=dict)
    """Per training item (by id): its score, 0 when failed or unparsed (as `accuracy` counts)."""

    def point(self, split: str = "train") -> Point:
        """(cost per item, accuracy) on `split`."""
        report = self.train if split == "train" else self.test
        assert report is not None
        return (report.cost_per_item, report.accuracy or 0.0)


@dataclass(slots=True, kw_only=True)
class Calibration:
    """Everything calibration found: the trials, the choice, singles and the test frontier."""

    system: str
    target: Target
    knobs: list[Knob]
    trials: list[Trial]
    chosen: Trial
    met: bool
    required: float
    """The training accuracy (quality target) or cost per item (budget target) needed."""
    singles_train: dict[str, EvalReport]
    singles_test: dict[str, EvalReport]
    frontier: Frontier
    n_train: int
    n_test: int
    invalid: list[str] = field(default_factory=list)
    confidence: float | None = None
    """The one-sided confidence a quality target was held to, if any."""
    ceiling: float | None = None
    """The most a setting could cost per item (USD) under a quality target with a ceiling."""
    dominated_by: str | None = None
    """A single model that did better than the chosen setting on the training split."""

    @property
    def reached(self) -> float:
        """What the chosen setting reached on the training items, to set beside `required`:
        its accuracy (quality target) or cost per item (budget target)."""
        cost, accuracy = self.chosen.point()
        return accuracy if self.target.kind == "quality" else cost

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (without the config texts)."""

        def trial(t: Trial) -> dict[str, Any]:
            out: dict[str, Any] = {"values": t.values, "train": t.train.to_dict()}
            if t.test is not None:
                out["test"] = t.test.to_dict()
            return out

        return {
            "system": self.system,
            "target": str(self.target),
            "required": self.required,
            "reached": self.reached,
            "met": self.met,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "confidence": self.confidence,
            "cost_ceiling": self.ceiling,
            "reached_cost": self.chosen.point()[0],
            "dominated_by": self.dominated_by,
            "knobs": {k.name: list(k.values) for k in self.knobs},
            "chosen": trial(self.chosen),
            "trials": [trial(t) for t in self.trials],
            "invalid": self.invalid,
            "singles_train": {k: v.to_dict() for k, v in self.singles_train.items()},
            "singles_test": {k: v.to_dict() for k, v in self.singles_test.items()},
            "frontier": self.frontier.to_dict(),
        }


def _require_scored(singles: dict[str, Evaluation], split: str) -> None:
    """ConfigError when no single model's answer on `split` was scored, with the first failed
    call's reason: such a split measured nothing (replayed models still reading recordings
    that lack its prompts, labels the scorer cannot use), whatever figures it would give."""
    unknown = {name: accuracy_unknown(e.report) for name, e in singles.items()}
    if not all(unknown.values()):
        return
    reasons = "; ".join(f"{name}: {reason}" for name, reason in unknown.items())
    failed = next((e.tally.first_failure for e in singles.values() if e.tally.first_failure), None)
    first = f"; the first failure, item {failed[0]}: {failed[1]}" if failed else ""
    raise ConfigError(
        f"cannot calibrate: no single model's answer on the {split} split was scored "
        f"({reasons}){first}; check the set's labels and --scorer, and that the models "
        "answer the split's prompts"
    )


def assignments(knobs: Sequence[Knob], max_trials: int, seed: int) -> list[dict[Loc, Any]]:
    """Every combination of knob values, or a seeded sample of `max_trials` of them."""
    total = 1
    for knob in knobs:
        total *= len(knob.values)
    if total <= max_trials:
        combos = list(itertools.product(*(k.values for k in knobs)))
    else:
        rng = random.Random(seed)
        picked: set[tuple[Any, ...]] = set()
        while len(picked) < max_trials:
            picked.add(tuple(rng.choice(k.values) for k in knobs))
        combos = sorted(picked, key=repr)
    return [{k.path: v for k, v in zip(knobs, combo, strict=True)} for combo in combos]


def item_scores(evaluation: Evaluation) -> dict[str, float]:
    """Each item's score by id; failed and unparsed items count 0, as `accuracy` does."""
    return dict(zip(evaluation.tally.ids, evaluation.tally.scores, strict=True))


def surely_meets(
    scores: dict[str, float], reference: dict[str, float], fraction: float, confidence: float
) -> bool:
    """Whether, at one-sided `confidence`, the mean of score − fraction × reference score over
    the same items is ≥ 0 (a paired normal bound): the target met with room for sampling noise,
    not just on the items at hand."""
    diffs = [scores.get(i, 0.0) - fraction * ref for i, ref in reference.items()]
    if len(diffs) < 2:
        return False
    spread = statistics.stdev(diffs) / math.sqrt(len(diffs))
    z = statistics.NormalDist().inv_cdf(confidence)
    return statistics.fmean(diffs) - z * spread >= -1e-12


def choose(
    trials: Sequence[Trial],
    target: Target,
    best_single: float,
    *,
    reference: dict[str, float] | None = None,
    confidence: float | None = None,
    ceiling: float | None = None,
) -> tuple[Trial, bool, float]:
    """The trial meeting `target` on training data at the lowest cost (quality) or with the best
    accuracy (budget); when none meets it, the closest one. Returns (trial, met, required).

    With `confidence` (and the best single model's per-item `reference` scores), a quality
    target is met only when it holds at that confidence (`surely_meets`). With a `ceiling`
    (USD per item), a quality target is met only at no more than that cost, and the closest
    setting is the most accurate one within it (else, when every one costs more, the
    cheapest): what can be spent bounds a deployment, and the most accurate setting overall
    (every item to the strong model) would claim the quality at any cost."""
    if target.kind == "quality":
        required = target.value * best_single
        if confidence is not None and reference is not None:
            good = [
                t for t in trials if surely_meets(t.scores, reference, target.value, confidence)
            ]
        else:
            good = [t for t in trials if (t.train.accuracy or 0.0) >= required - 1e-12]
        within = [t for t in trials if ceiling is None or t.point()[0] <= ceiling + 1e-15]
        ok = [t for t in good if t in within]
        if ok:
            return min(ok, key=lambda t: (t.point()[0], -t.point()[1])), True, required
        if ceiling is not None and not within:
            return min(trials, key=lambda t: (t.point()[0], -t.point()[1])), False, required
        return max(within, key=lambda t: (t.point()[1], -t.point()[0])), False, required
    ok = [t for t in trials if t.train.cost_per_item <= target.value + 1e-15]
    if ok:
        return max(ok, key=lambda t: (t.point()[1], -t.point()[0])), True, target.value
    return min(trials, key=lambda t: (t.point()[0], -t.point()[1])), False, target.value


def dominating_single(chosen: Trial, singles: dict[str, EvalReport]) -> str | None:
    """A single model that did better than the chosen setting on the training split (at least
    as accurate and no dearer, better in one): the system then buys nothing over that model
    alone, whatever target it meets. None when there is no such model."""
    cost, accuracy = chosen.point()
    for name, report in singles.items():
        their_cost, their_accuracy = report.cost_per_item, report.accuracy or 0.0
        no_worse = their_accuracy >= accuracy - 1e-12 and their_cost <= cost + 1e-15
        if no_worse and (their_accuracy > accuracy + 1e-12 or their_cost < cost - 1e-15):
            return name
    return None


def pareto(trials: Sequence[Trial]) -> list[Trial]:
    """Trials no other trial beats on both cost and accuracy (training split)."""
    ordered = sorted(trials, key=lambda t: (t.point()[0], -t.point()[1]))
    front: list[Trial] = []
    best = -1.0
    for trial in ordered:
        if trial.point()[1] > best + 1e-12:
            front.append(trial)
            best = trial.point()[1]
    return front


class Calibrator:
    """Runs candidate configs built from one config file, sharing loaded resources."""

    def __init__(
        self,
        config: Path | LoadedConfig,
        system: str,
        scorer: Scorer,
        *,
        concurrency: int = 8,
        progress: Progress | None = None,
        base: Yard | None = None,
    ) -> None:
        """`base`: `config` (loaded) already built for evaluation, to run as it is written,
        so a caller that built it first (to check the system, find its knobs, make the
        scorer) does not build it, and load its local models, again."""
        # A config already loaded (the command read it) is not read and parsed again.
        self.loaded = config if isinstance(config, LoadedConfig) else load_config(config)
        self.path = self.loaded.path
        self.text = self.loaded.text
        self.system = system
        self.scorer = scorer
        self.concurrency = concurrency
        self.progress = progress
        self.resources = Resources() if base is None else base.resources
        self._base = base

    def yard(self, text: str) -> Yard:
        """The config `text` built (with this calibrator's shared resources); the config as
        written is built once, and run for the single models on both splits."""
        if text != self.text:
            return build_for_evaluation(parse(text, path=str(self.path)), self.resources)
        if self._base is None:
            self._base = build_for_evaluation(self.loaded, self.resources)
        return self._base

    async def aclose(self) -> None:
        """Close the models and resources of every config built."""
        if self._base is not None:
            await self._base.aclose()  # its models, then the shared resources
        else:
            await self.resources.aclose()

    async def run(self, yard: Yard, target: str, items: Sequence[Item]) -> Evaluation:
        """Evaluate `target` of `yard` over `items`."""
        return await evaluate(yard, target, items, self.scorer, concurrency=self.concurrency)

    def _tick(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(phase, done, total)

    async def singles(self, items: Sequence[Item], phase: str) -> dict[str, Evaluation]:
        """Each model the system uses, alone, over `items`."""
        base = self.yard(self.text)
        names = leaf_models(base, self.system)
        out = {}
        for n, name in enumerate(names):
            out[name] = await self.run(base, name, items)
            self._tick(phase, n + 1, len(names))
        return out

    async def calibrate(
        self,
        knobs: Sequence[Knob],
        target: Target,
        train: Sequence[Item],
        test: Sequence[Item],
        *,
        max_trials: int = 200,
        seed: int = 0,
        confidence: float | None = None,
    ) -> Calibration:
        """Search `knobs` on `train`, choose per `target`, report the frontier on `test`.

        With `confidence`, a quality target must hold at that one-sided confidence against
        the best single model's per-item scores (see `surely_meets`), not just on average."""
        if not knobs:
            raise ConfigError(
                f"system {self.system!r} has no tunable knobs; name some with --knob PATH=VALUES"
            )
        singles_train = await self.singles(train, "single models (train)")
        _require_scored(singles_train, "training")  # else 95 % of an accuracy of 0 is met
        # The reference of the target and the frontier's strong model: the most accurate
        # single model, the cheaper of two as accurate.
        strong = max(
            singles_train,
            key=lambda n: (
                singles_train[n].report.accuracy or 0.0,
                -singles_train[n].report.cost_per_item,
            ),
        )
        best = singles_train[strong]
        best_single = best.report.accuracy or 0.0
        ceiling = target.ceiling_usd(best.report.cost_per_item)
        trials, invalid = await self._search(knobs, train, max_trials, seed)
        if not trials:
            raise ConfigError("no candidate setting could be built: " + "; ".join(invalid[:3]))
        chosen, met, required = choose(
            trials,
            target,
            best_single,
            reference=item_scores(best),
            confidence=confidence,
            ceiling=ceiling,
        )
        # After the choice, so no test label is read before it; before the frontier's runs,
        # so a test split no model answers stops here rather than reporting a frontier of 0s.
        singles_test = await self.singles(test, "single models (test)")
        _require_scored(singles_test, "test")
        front = pareto(trials)
        scored = [*front, *([chosen] if chosen not in front else [])]
        for n, trial in enumerate(scored):
            trial.test = (await self.run(self.yard(trial.text), self.system, test)).report
            self._tick("frontier (test)", n + 1, len(scored))
        frontier = build_frontier(
            {"system": [t.point("test") for t in front], "calibrated": [chosen.point("test")]},
            {name: e.tally for name, e in singles_test.items()},
            strong=strong,
            target_fraction=target.value if target.kind == "quality" else 0.95,
            with_singles=("system",),
        )
        return Calibration(
            system=self.system,
            target=target,
            knobs=list(knobs),
            trials=trials,
            chosen=chosen,
            met=met,
            required=required,
            singles_train={k: v.report for k, v in singles_train.items()},
            singles_test={k: v.report for k, v in singles_test.items()},
            frontier=frontier,
            n_train=len(train),
            n_test=len(test),
            invalid=invalid,
            confidence=confidence if target.kind == "quality" else None,
            ceiling=ceiling,
            dominated_by=dominating_single(chosen, {k: v.report for k, v in singles_train.items()}),
        )

    async def _search(
        self, knobs: Sequence[Knob], train: Sequence[Item], max_trials: int, seed: int
    ) -> tuple[list[Trial], list[str]]:
        names = {k.path: k.name for k in knobs}
        candidates = assignments(knobs, max_trials, seed)
        trials: list[Trial] = []
        invalid: list[str] = []
        for n, assignment in enumerate(candidates):
            values = {names[path]: value for path, value in assignment.items()}
            try:
                text = apply_values(self.text, assignment)
                yard = self.yard(text)
            except ConfigError as exc:
                invalid.append(f"{values}: {exc}")
                continue
            evaluation = await self.run(yard, self.system, train)
            trials.append(
                Trial(
                    values=values,
                    text=text,
                    train=evaluation.report,
                    scores=item_scores(evaluation),
                )
            )
            self._tick("search (train)", n + 1, len(candidates))
        return trials, invalid
