"""The golden-set gate: run a baseline and a candidate config on the same items and fail when
the candidate is worse beyond tolerances — before a model or config change ships."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from modelyard.errors import ConfigError
from modelyard.evaluation.report import EvalReport, Tally, accuracy_unknown


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The bounds a candidate must stay within: the least accuracy, and the most cost per item,
    p95 latency and share of failed calls (the baseline's figures moved by the tolerances)."""

    accuracy: float
    cost_per_item: float
    latency_p95_ms: float
    failure_rate: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Tolerances:
    """How much worse a candidate may be. Accuracy and failure rate are absolute fractions;
    cost and latency are relative, and latency also gets an absolute slack so noise on fast
    systems does not fail the gate."""

    accuracy_drop: float = 0.0
    cost_increase: float = 0.05
    latency_increase: float = 0.25
    latency_slack_ms: float = 50.0
    failure_increase: float = 0.0
    allow_drift: bool = False
    """Pass a candidate whose answers came from another model than the one it pins (by
    default that fails: the gate would have measured a model the config does not name)."""

    def __post_init__(self) -> None:
        # Every comparison with NaN is false, so a NaN tolerance would switch its check off.
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not math.isfinite(value):
                readable = name.replace("_", " ").replace(" ms", " (ms)")
                raise ConfigError(f"the {readable} tolerance must be a finite number, got {value}")

    def limits(self, baseline: EvalReport) -> Limits:
        """The figures a candidate may reach against `baseline` and still pass."""
        return Limits(
            accuracy=(baseline.accuracy or 0.0) - self.accuracy_drop,
            cost_per_item=baseline.cost_per_item * (1 + self.cost_increase),
            latency_p95_ms=baseline.latency_p95_ms
            + max(baseline.latency_p95_ms * self.latency_increase, self.latency_slack_ms),
            failure_rate=baseline.failed / max(1, baseline.n) + self.failure_increase,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class GateResult:
    """Both reports, what the candidate broke or fixed, and the violated tolerances."""

    baseline: EvalReport
    candidate: EvalReport
    tolerances: Tolerances
    violations: list[str]
    broken: list[str] = field(default_factory=list)
    """Ids of items the baseline got right and the candidate does not."""
    fixed: list[str] = field(default_factory=list)
    model_changes: list[str] = field(default_factory=list)
    """Provider-reported model ids that differ between the two runs, and drift from pins."""

    @property
    def passed(self) -> bool:
        """Whether the candidate is within every tolerance."""
        return not self.violations

    @property
    def broken_and_fixed(self) -> str:
        """`1 item broken, 2 fixed`: the line the CLI and the HTML report give the ids under."""
        items = "item" if len(self.broken) == 1 else "items"
        return f"{len(self.broken)} {items} broken, {len(self.fixed)} fixed"

    @property
    def limits(self) -> Limits:
        """The bounds the candidate was held to."""
        return self.tolerances.limits(self.baseline)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "passed": self.passed,
            "violations": self.violations,
            "tolerances": {
                "accuracy_drop": self.tolerances.accuracy_drop,
                "cost_increase": self.tolerances.cost_increase,
                "latency_increase": self.tolerances.latency_increase,
                "latency_slack_ms": self.tolerances.latency_slack_ms,
                "failure_increase": self.tolerances.failure_increase,
                "allow_drift": self.tolerances.allow_drift,
            },
            "limits": dataclasses.asdict(self.limits),
            "baseline": self.baseline.to_dict(),
            "candidate": self.candidate.to_dict(),
            "broken": self.broken,
            "fixed": self.fixed,
            "model_changes": self.model_changes,
        }


def _model_changes(base: Tally, cand: Tally) -> list[str]:
    changes = set()
    for model, reported in cand.provider_models.items():
        known = base.provider_models.get(model)
        for provider_model in reported:
            if known and provider_model not in known:
                before = ", ".join(sorted(known))
                changes.add(f"{model}: provider reported {provider_model!r} (was {before})")
    changes.update(cand.drift_by_model)
    return sorted(changes)


def _drift(tally: Tally) -> str:
    """Each drift from a pinned id in `tally`, with how many items it touched."""
    counts = tally.drift_by_model
    return "; ".join(f"{text}, {n} item{'s' * (n != 1)}" for text, n in sorted(counts.items()))


def _changed(base: Tally, cand: Tally) -> tuple[list[str], list[str]]:
    """Ids of the items the candidate broke (the baseline got them right, it does not) and
    fixed (the other way round); an item is right at a score of 0.5 or more."""
    base_right = {item: score >= 0.5 for item, score in zip(base.ids, base.scores, strict=True)}
    broken: list[str] = []
    fixed: list[str] = []
    for item, score in zip(cand.ids, cand.scores, strict=True):
        before = base_right.get(item)
        if before is not None and before != (score >= 0.5):
            (broken if before else fixed).append(item)
    return broken, fixed


def judge(
    baseline: EvalReport,
    candidate: EvalReport,
    base_tally: Tally,
    cand_tally: Tally,
    tolerances: Tolerances,
) -> GateResult:
    """Compare the two runs against `tolerances`. ConfigError when accuracy cannot be compared
    (no labels, nothing scored, a non-finite figure): every comparison with it would pass."""
    for side, report in (("baseline", baseline), ("candidate", candidate)):
        reason = accuracy_unknown(report)
        if reason is not None:
            raise ConfigError(
                f"cannot compare accuracy: {side}: {reason}; check the golden set's labels "
                "and --scorer"
            )
    violations = []
    limits = tolerances.limits(baseline)
    base_acc, cand_acc = baseline.accuracy or 0.0, candidate.accuracy or 0.0
    if cand_acc < limits.accuracy - 1e-12:
        moved = "fell" if cand_acc < base_acc else "did not rise"  # a negative drop asks a gain
        allowed = (
            f"allowed drop {tolerances.accuracy_drop:.2%}"
            if tolerances.accuracy_drop >= 0
            else f"a gain of {-tolerances.accuracy_drop:.2%} asked"
        )
        violations.append(f"accuracy {moved} from {base_acc:.2%} to {cand_acc:.2%} ({allowed})")
    if candidate.cost_per_item > limits.cost_per_item + 1e-15:
        violations.append(
            f"cost per item rose from ${baseline.cost_per_item:.6f} to "
            f"${candidate.cost_per_item:.6f} (allowed +{tolerances.cost_increase:.0%})"
        )
    if candidate.latency_p95_ms > limits.latency_p95_ms:
        violations.append(
            f"p95 latency rose from {baseline.latency_p95_ms:.0f} ms to "
            f"{candidate.latency_p95_ms:.0f} ms (allowed {limits.latency_p95_ms:.0f} ms)"
        )
    base_fail = baseline.failed / max(1, baseline.n)
    cand_fail = candidate.failed / max(1, candidate.n)
    if cand_fail > limits.failure_rate + 1e-12:
        violations.append(f"failed calls rose from {base_fail:.2%} to {cand_fail:.2%}")
    drifted = _drift(cand_tally)
    if drifted and not tolerances.allow_drift:
        violations.append(
            f"the candidate's answers came from models it does not pin ({drifted}): the gate "
            "measured another model than the config names (--allow-drift to pass anyway)"
        )
    broken, fixed = _changed(base_tally, cand_tally)
    return GateResult(
        baseline=baseline,
        candidate=candidate,
        tolerances=tolerances,
        violations=violations,
        broken=broken,
        fixed=fixed,
        model_changes=_model_changes(base_tally, cand_tally),
    )
