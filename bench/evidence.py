"""Evidence on recorded outcomes: what routers and cascades buy over single models.

    .venv/bin/python bench/evidence.py [--seed 0] [--json bench/evidence.json]

Every policy is trained and calibrated on one half of each data set (seeded random split) and
scored on the other half; the reference routers (random, oracle) are computed on the scoring
half. Features are the `hashing` embedder's character-trigram vectors (1,024 dimensions) plus
two lengths; models are per-model logistic regressions in numpy. Thresholds and λ are chosen
on out-of-fold predictions of the training half (5 folds), never on the scoring half.

RouteLLM (GPT-4-1106 vs Mixtral-8x7B; GSM8K, MMLU): % of GPT-4 calls (and of GPT-4 dollars,
list prices, tokens estimated from the texts) saved at 95% of GPT-4's accuracy by
- a learned binary router on the prompt (predicted gain P(strong right) - P(weak right)),
- a learned cascade (GSM8K only: Mixtral answers, P(Mixtral right | prompt, answer) decides).
RouterBench (11 models, recorded costs; ARC-Challenge, MBPP, Winogrande): a learned cost-aware
router (argmax P(right) - λ·relative cost, CARROT-style) and two-cheap-models agreement
cascades, against GPT-4-Turbo, the best single model, a random router and the oracle (AIQ).
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.cost.prices import estimate_tokens
from modelyard.evaluation.formats import LIST_PRICES, load_recordings
from modelyard.evaluation.frontier import aiq, apgr, cost_at_quality, oracle_curve
from modelyard.evaluation.recordings import Recordings, data_root
from modelyard.model import ModelInfo
from modelyard.providers.local_basic import HashingEmbedder

WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "gpt-4-1106-preview"
TARGET = 0.95


@dataclass
class Task:
    """Aligned per-model, per-item outcomes of one data set."""

    name: str
    prompts: list[str]
    models: list[str]
    scores: np.ndarray  # models × items, missing = 0
    costs: np.ndarray  # models × items, USD
    texts: list[list[str]]  # models × items


def _task(name: str, recordings: Recordings, keep: str | None = None) -> Task:
    items = [i for i in recordings.items if keep is None or i.meta.get("task") == keep]
    models = list(recordings.models)
    scores = np.zeros((len(models), len(items)))
    costs = np.zeros((len(models), len(items)))
    texts = [[""] * len(items) for _ in models]
    for j, item in enumerate(items):
        for m, model in enumerate(models):
            outcome = item.outcomes.get(model)
            if outcome is None:
                continue
            scores[m, j] = outcome.score or 0.0
            texts[m][j] = outcome.text
            if outcome.cost is not None:
                costs[m, j] = outcome.cost
            else:
                price = LIST_PRICES[model]
                tokens_in = estimate_tokens(item.prompt) + 4
                tokens_out = outcome.output_tokens or estimate_tokens(outcome.text)
                costs[m, j] = (tokens_in * price.input + tokens_out * price.output) / 1e6
    return Task(name, [i.prompt for i in items], models, scores, costs, texts)


_EMBEDDER = HashingEmbedder(ModelInfo(name="hashing", kind="hashing"), 1024)


def features(texts: list[str]) -> np.ndarray:
    """Hashed character trigrams plus log lengths."""
    vectors = np.array([_EMBEDDER.vector(t) for t in texts])
    lengths = np.array([[np.log1p(len(t)) / 8] for t in texts])
    return np.hstack([vectors, lengths, np.ones((len(texts), 1))])


def fit(x: np.ndarray, y: np.ndarray, l2: float = 10.0, steps: int = 300) -> np.ndarray:
    """L2-regularised logistic regression by gradient descent; the bias (last column) starts
    at the base rate and is not shrunk, so an uninformative prompt predicts the base rate."""
    w = np.zeros(x.shape[1])
    rate = float(np.clip(y.mean(), 0.02, 0.98))
    w[-1] = np.log(rate / (1 - rate))
    shrink = np.ones(x.shape[1])
    shrink[-1] = 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-x @ w))
        w -= 2.0 * (x.T @ (p - y) + l2 * shrink * w) / len(y)
    return w


def predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """P(right)."""
    return 1 / (1 + np.exp(-x @ w))


def out_of_fold(x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Predictions for each training item from a model that did not see it."""
    order = np.random.default_rng(seed).permutation(len(y))
    out = np.zeros(len(y))
    for k in range(folds):
        held = order[k::folds]
        kept = np.setdiff1d(order, held)
        out[held] = predict(fit(x[kept], y[kept]), x[held])
    return out


def split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded half/half split of item positions."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def _threshold_points(
    need: np.ndarray, strong: np.ndarray, weak: np.ndarray, extra: np.ndarray
) -> list[tuple[float, float, float]]:
    """(share escalated, accuracy, threshold) sweeping the escalation threshold on `need`."""
    order = np.argsort(-need)
    n = len(need)
    out = []
    for k in range(n + 1):
        chosen = np.zeros(n, dtype=bool)
        chosen[order[:k]] = True
        threshold = float(need[order[k - 1]]) if k else float("inf")
        out.append(
            (k / n, float(np.where(chosen, strong, weak).mean() + 0 * extra.sum()), threshold)
        )
    return out


def binary_policy(
    task: Task, x: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int, cascade: bool
) -> dict[str, Any]:
    """Learned router (or cascade) between WEAK and STRONG; returns test figures."""
    w, s = task.models.index(WEAK), task.models.index(STRONG)
    yw, ys = task.scores[w], task.scores[s]
    if cascade:
        oof_w = out_of_fold(x[train], yw[train], 5, seed)
        need_train = -oof_w
        need_test = -predict(fit(x[train], yw[train]), x[test])
    else:
        need_train = out_of_fold(x[train], ys[train], 5, seed) - out_of_fold(
            x[train], yw[train], 5, seed
        )
        need_test = predict(fit(x[train], ys[train]), x[test]) - predict(
            fit(x[train], yw[train]), x[test]
        )
    goal_train = TARGET * ys[train].mean()
    curve_train = _threshold_points(need_train, ys[train], yw[train], need_train)
    share, _, threshold = next(p for p in curve_train if p[1] >= goal_train)
    escalate = need_test >= threshold
    acc = float(np.where(escalate, ys[test], yw[test]).mean())
    cost_strong = task.costs[s, test]
    cost_weak = task.costs[w, test]
    spent = np.where(escalate, cost_strong + (cost_weak if cascade else 0), cost_weak)
    curve_test = [(k, a) for k, a, _ in _threshold_points(need_test, ys[test], yw[test], need_test)]
    needed = cost_at_quality(curve_test, TARGET * ys[test].mean())
    return {
        "policy": "learned cascade" if cascade else "learned router",
        "calibrated": {
            "threshold": threshold,
            "train_strong_share": share,
            "test_accuracy": acc,
            "test_fraction_of_strong": acc / ys[test].mean(),
            "test_strong_share": float(escalate.mean()),
            "gpt4_calls_saved": 1 - float(escalate.mean()),
            "gpt4_dollars_saved": 1 - float(spent.sum() / cost_strong.sum()),
        },
        "curve": {
            "apgr": apgr(curve_test, yw[test].mean(), ys[test].mean()),
            "strong_share_at_95": needed,
            "gpt4_calls_saved_at_95": None if needed is None else 1 - needed,
        },
    }


def routellm(seed: int, root: Path) -> dict[str, Any]:
    """GSM8K and MMLU: learned router (and cascade on GSM8K) vs random and oracle."""
    out: dict[str, Any] = {}
    sets = {
        "gsm8k": load_recordings("routellm-gsm8k", [root / "routellm/gsm8k/gsm8k_responses.csv"]),
        "mmlu": load_recordings("routellm-mmlu", [root / "routellm/mmlu/responses"]),
    }
    for name, recordings in sets.items():
        task = _task(name, recordings)
        train, test = split(len(task.prompts), seed)
        w, s = task.models.index(WEAK), task.models.index(STRONG)
        weak, strong = task.scores[w, test].mean(), task.scores[s, test].mean()
        either = np.maximum(task.scores[w, test], task.scores[s, test])
        random_share = (TARGET * strong - weak) / (strong - weak)
        only_strong = ((task.scores[s, test] == 1) & (task.scores[w, test] == 0)).mean()
        # perfect router: send to STRONG only where it alone is right, as many as needed
        oracle_share = max(0.0, (TARGET * strong - weak) / 1.0)
        oracle_share = min(only_strong, oracle_share)
        result: dict[str, Any] = {
            "n_train": len(train),
            "n_test": len(test),
            "seed": seed,
            "weak_accuracy": weak,
            "strong_accuracy": strong,
            "oracle_accuracy": either.mean(),
            "random_gpt4_calls_saved": 1 - random_share,
            "oracle_gpt4_calls_saved": 1 - oracle_share,
            "policies": [],
        }
        prompt_x = features(task.prompts)
        result["policies"].append(binary_policy(task, prompt_x, train, test, seed, cascade=False))
        if name == "gsm8k":
            answer_x = features(
                [p + "\n" + a for p, a in zip(task.prompts, task.texts[w], strict=True)]
            )
            result["policies"].append(binary_policy(task, answer_x, train, test, seed, True))
        out[name] = result
    return out


_LETTER = re.compile(r"[A-E1-2]")


def _answer(text: str) -> str:
    found = _LETTER.search(text.strip()[:3])
    return found.group(0) if found else text.strip()[:40]


class Bench:
    """One RouterBench task on one split: outcomes, features, and policy evaluators."""

    def __init__(self, task: Task, x: np.ndarray, seed: int) -> None:
        self.task, self.x, self.seed = task, x, seed
        self.train, self.test = split(len(task.prompts), seed)
        self.strong = task.models.index(STRONG)
        self.mean_cost = task.costs[:, self.train].mean(axis=1)
        self.cheap = [
            i
            for i in range(len(task.models))
            if i != self.strong and self.mean_cost[i] < 0.3 * self.mean_cost[self.strong]
        ]
        self.answers = [[_answer(t) for t in texts] for texts in task.texts]

    def share(self, cost: float, idx: np.ndarray) -> float:
        """`cost` per item as a share of GPT-4's on `idx`."""
        return cost / float(self.task.costs[self.strong, idx].mean())

    def fraction(self, accuracy: float, idx: np.ndarray) -> float:
        """`accuracy` as a fraction of GPT-4's on `idx`."""
        return accuracy / float(self.task.scores[self.strong, idx].mean())

    def vote(self, members: tuple[int, ...], idx: np.ndarray) -> tuple[float, float]:
        """Cheap members answer in turn until two agree (majority so far); else GPT-4."""
        t = self.task
        cost = np.zeros(len(idx))
        score = np.zeros(len(idx))
        for k, j in enumerate(idx):
            seen: list[int] = []
            for m in members:
                cost[k] += t.costs[m, j]
                match = [s for s in seen if self.answers[s][j] == self.answers[m][j]]
                if match:
                    score[k] = t.scores[m, j]
                    break
                seen.append(m)
                if len(seen) == 1:
                    continue
            else:
                cost[k] += t.costs[self.strong, j]
                score[k] = t.scores[self.strong, j]
        return float(cost.mean()), float(score.mean())

    def router_points(self, p: np.ndarray, idx: np.ndarray) -> list[tuple[float, float, float]]:
        """(λ, cost, accuracy) of the cost-aware router over a λ sweep."""
        rel = self.mean_cost / self.mean_cost.max()
        cols = np.arange(len(idx))
        out = []
        for lam in [0.0, *np.geomspace(0.001, 5, 60)]:
            pick = np.argmax(p - lam * rel[:, None], axis=0)
            out.append(
                (
                    float(lam),
                    float(self.task.costs[pick, idx[cols]].mean()),
                    float(self.task.scores[pick, idx[cols]].mean()),
                )
            )
        return out

    def binary_points(
        self, gain: np.ndarray, cheap: int, idx: np.ndarray
    ) -> list[tuple[float, float, float]]:
        """(threshold, cost, accuracy) of a cheap-vs-GPT-4 router sweeping its threshold."""
        t, s = self.task, self.strong
        order = np.argsort(-gain)
        out = []
        for k in range(len(idx) + 1):
            chosen = np.zeros(len(idx), dtype=bool)
            chosen[order[:k]] = True
            out.append(
                (
                    float(gain[order[k - 1]]) if k else float("inf"),
                    float(np.where(chosen, t.costs[s, idx], t.costs[cheap, idx]).mean()),
                    float(np.where(chosen, t.scores[s, idx], t.scores[cheap, idx]).mean()),
                )
            )
        return out


def _pick(points: list[tuple[Any, float, float]], need: float) -> int:
    ok = [(c, i) for i, (_, c, a) in enumerate(points) if a >= need]
    return min(ok)[1] if ok else max(range(len(points)), key=lambda i: points[i][2])


def routerbench_task(task: Task, x: np.ndarray, seed: int, goal: float) -> dict[str, Any]:
    """Every policy calibrated on the training half, scored on the test half."""
    b = Bench(task, x, seed)
    tr, te, s = b.train, b.test, b.strong
    need = goal * float(task.scores[s, tr].mean())
    out: dict[str, Any] = {
        "n_train": len(tr),
        "n_test": len(te),
        "seed": seed,
        "goal": goal,
        "gpt4_accuracy": float(task.scores[s, te].mean()),
    }
    singles = {
        m: (float(task.costs[i, te].mean()), float(task.scores[i, te].mean()))
        for i, m in enumerate(task.models)
    }
    # single model chosen on train: the cheapest that reaches the goal there
    single_train = [
        (None, float(task.costs[i, tr].mean()), float(task.scores[i, tr].mean()))
        for i in range(len(task.models))
    ]
    chosen_single = _pick(single_train, need)
    out["cheapest single meeting the goal on train"] = {
        "model": task.models[chosen_single],
        "fraction_of_gpt4": b.fraction(singles[task.models[chosen_single]][1], te),
        "cost_share": b.share(singles[task.models[chosen_single]][0], te),
    }
    # multi-model cost-aware router (per-model P(right) from the prompt)
    oof = np.array(
        [out_of_fold(x[tr], task.scores[i, tr], 5, seed) for i in range(len(task.models))]
    )
    full = np.array(
        [predict(fit(x[tr], task.scores[i, tr]), x[te]) for i in range(len(task.models))]
    )
    r_train, r_test = b.router_points(oof, tr), b.router_points(full, te)
    i = _pick(r_train, need)
    out["learned router"] = {
        "lambda": r_train[i][0],
        "fraction_of_gpt4": b.fraction(r_test[i][2], te),
        "cost_share": b.share(r_test[i][1], te),
    }
    # binary router: the cheap model and threshold chosen on train
    best: tuple[float, int, float] | None = None
    p_strong_oof = oof[s]
    for m in b.cheap:
        pts = b.binary_points(p_strong_oof - oof[m], m, tr)
        k = _pick(pts, need)
        if pts[k][2] >= need and (best is None or pts[k][1] < best[0]):
            best = (pts[k][1], m, pts[k][0])
    if best is not None:
        _, m, threshold = best
        gain = full[s] - full[m]
        escalate = gain >= threshold
        acc = float(np.where(escalate, task.scores[s, te], task.scores[m, te]).mean())
        cost = float(np.where(escalate, task.costs[s, te], task.costs[m, te]).mean())
        out["binary router"] = {
            "cheap": task.models[m],
            "fraction_of_gpt4": b.fraction(acc, te),
            "cost_share": b.share(cost, te),
            "gpt4_share": float(escalate.mean()),
        }
        binary_curve = [(c, a) for _, c, a in b.binary_points(gain, m, te)]
    else:
        binary_curve = []
    # agreement cascades: 2 (then 3) cheap models until two agree, else GPT-4
    candidates = [*itertools.permutations(b.cheap, 2), *itertools.permutations(b.cheap, 3)]
    on_train = [(None, *b.vote(c, tr)) for c in candidates]
    k = _pick(on_train, need)
    cost, acc = b.vote(candidates[k], te)
    out["agreement cascade"] = {
        "members": [task.models[m] for m in candidates[k]],
        "fraction_of_gpt4": b.fraction(acc, te),
        "cost_share": b.share(cost, te),
    }
    vote_curve = [b.vote(c, te) for c in candidates[:: max(1, len(candidates) // 60)]]
    oracle = oracle_curve(task.scores[:, te], task.costs[:, te])
    curves = {
        "learned router": [(c, a) for _, c, a in r_test],
        "binary router": binary_curve,
        "agreement cascades": vote_curve,
        "random": list(singles.values()),
        "oracle": oracle,
    }
    curves = {k: v for k, v in curves.items() if v}
    top = max(c for pts in curves.values() for c, _ in pts)
    best_single = max(singles, key=lambda m: (singles[m][1], -singles[m][0]))
    out["aiq"] = {k: aiq(v, top) for k, v in curves.items()}
    out["best single"] = {
        "model": best_single,
        "fraction_of_gpt4": b.fraction(singles[best_single][1], te),
        "cost_share": b.share(singles[best_single][0], te),
    }
    out["oracle"] = {
        "fraction_of_gpt4": b.fraction(oracle[-1][1], te),
        "cost_share": b.share(oracle[-1][0], te),
    }
    return out


def routerbench(seeds: list[int], root: Path) -> dict[str, Any]:
    """ARC-Challenge, MBPP, Winogrande over several seeded splits."""
    recordings = load_recordings("routerbench", [root / "routerbench-train"])
    out: dict[str, Any] = {}
    for name, goal in (("arc-challenge", 0.95), ("mbpp", 1.0), ("winogrande", 0.95)):
        task = _task(name, recordings, keep=name)
        x = features(task.prompts)
        out[name] = [routerbench_task(task, x, seed, goal) for seed in seeds]
    return out


def main() -> None:
    """Run every benchmark and print (and optionally save) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="Seeds 0..N-1 for RouterBench.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the RouteLLM split.")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--only", choices=["routellm", "routerbench"], default=None)
    args = parser.parse_args()
    root = data_root()
    if root is None:
        raise SystemExit("no shared data folder: set MODELYARD_DATA")
    started = time.perf_counter()
    results: dict[str, Any] = {}
    if args.only in (None, "routellm"):
        results["routellm"] = routellm(args.seed, root)
    if args.only in (None, "routerbench"):
        results["routerbench"] = routerbench(list(range(args.seeds)), root)
    results["seconds"] = time.perf_counter() - started
    text = json.dumps(results, indent=1, default=float)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
