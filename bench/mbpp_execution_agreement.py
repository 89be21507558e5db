"""Can running the models' code tell a right MBPP answer from a wrong one? (issue 6, MBPP)

RouterBench's MBPP prompts carry no tests, so the only label-free evidence about an answer's
code is how it behaves next to the other models' code. This measures the CodeT / MBR-exec idea
on the recordings: take each model's Python function, call every model's function on the example
inputs any of the answers wrote (`f([1, 2], [2, 3])`, asserts, `[TESTS]` blocks), and compare
what they return.

- agreement: the share of shared inputs on which GPT-3.5's function returns what another cheap
  model's returns, averaged over the other models; its AUC for GPT-3.5 being right, and the
  accuracy and cost of escalating the k least agreed answers to GPT-4-Turbo (k set by hand, so
  the curve is in-sample: an upper bound for a calibrated threshold);
- pick by agreement: answer with the member whose function agrees most with the others;
- both: answer with the most agreed member, and send the items where even it agrees least to
  GPT-4-Turbo (k again set by hand on the same rows).

The code is recorded model output from a public benchmark; each function runs in its own
`python -I` process with a 1 GiB address-space limit, a CPU limit and wall-clock timeouts, in
an empty temporary directory.

    .venv/bin/python bench/mbpp_execution_agreement.py     # about 2 minutes on 2 cores

Needs ../shared/data (or $MODELYARD_DATA).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import itertools
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from modelyard.evaluation.recordings import RecordedItem, data_root
from modelyard.evaluation.routerbench import load_routerbench

STRONG = "gpt-4-1106-preview"
FIRST = "gpt-3.5-turbo-1106"
CHEAP = (
    FIRST,
    "claude-instant-v1",
    "meta/code-llama-instruct-34b-chat",
    "mistralai/mixtral-8x7b-chat",
    "mistralai/mistral-7b-chat",
    "zero-one-ai/Yi-34B-Chat",
    "meta/llama-2-70b-chat",
    "WizardLM/WizardLM-13B-V1.2",
)
# Fenced blocks, and Code Llama's [PYTHON] / [TESTS] tags.
BLOCK = re.compile(
    r"```([\w+#-]*)[^\n]*\n(.*?)```|\[PYTHON\](.*?)\[/PYTHON\]|\[TESTS\](.*?)\[/TESTS\]", re.S
)
# What ast.literal_eval raises on an argument that is not a plain literal.
UNREADABLE = (ValueError, SyntaxError, TypeError, MemoryError, RecursionError)
NOT_PYTHON = {
    "javascript",
    "js",
    "java",
    "cpp",
    "c++",
    "c",
    "ruby",
    "go",
    "csharp",
    "c#",
    "rust",
    "php",
}

# Runs in the child: load the program, call its entry function on each input, print the results.
RUNNER = r"""
import ast, contextlib, copy, io, json, resource, signal, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
resource.setrlimit(resource.RLIMIT_CPU, (5, 5))
job = json.load(sys.stdin)
def late(*_): raise TimeoutError
signal.signal(signal.SIGALRM, late)
space = {"__name__": "candidate"}
try:
    signal.setitimer(signal.ITIMER_REAL, 2)
    with contextlib.redirect_stdout(io.StringIO()):
        exec(job["source"], space)
    signal.setitimer(signal.ITIMER_REAL, 0)
    entry = space[job["entry"]]
except BaseException:
    print(json.dumps(None)); sys.exit()
results = []
for text in job["inputs"]:
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with contextlib.redirect_stdout(io.StringIO()):
            value = entry(*copy.deepcopy(ast.literal_eval(text)))
        signal.setitimer(signal.ITIMER_REAL, 0)
        results.append("ok:" + repr(value)[:300])
    except BaseException as error:
        signal.setitimer(signal.ITIMER_REAL, 0)
        results.append("error:" + type(error).__name__)
print(json.dumps(results))
"""


@dataclass(frozen=True)
class Program:
    source: str
    entry: str
    arity: int
    examples: tuple[str, ...]
    """repr of each argument list the answer itself called its entry function with."""


def statements(answer: str) -> list[ast.stmt]:
    """The Python statements of every block that parses (a block's unparsable tail dropped)."""
    found: list[ast.stmt] = []
    for match in BLOCK.finditer(answer.replace("\r\n", "\n")):
        language = (match.group(1) or "").lower()
        source = next(g for g in match.groups()[1:] if g is not None)
        if language in NOT_PYTHON:
            continue
        lines = [
            line[4:] if line.startswith((">>> ", "... ")) else line for line in source.split("\n")
        ]
        while lines:
            try:
                found.extend(ast.parse("\n".join(lines)).body)
                break
            except SyntaxError:
                lines.pop()
    return found


def literal_calls(body: list[ast.stmt], entry: str) -> tuple[str, ...]:
    """Argument lists of calls to `entry` whose arguments are literals or literal variables."""
    names: dict[str, object] = {}
    calls: list[str] = []
    for statement in body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target = statement.targets[0]
            if isinstance(target, ast.Name):
                with contextlib.suppress(*UNREADABLE):
                    names[target.id] = ast.literal_eval(statement.value)
        for node in ast.walk(statement):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id != entry or node.keywords:
                continue
            try:
                args = [
                    names[a.id]
                    if isinstance(a, ast.Name) and a.id in names
                    else ast.literal_eval(a)
                    for a in node.args
                ]
            except UNREADABLE:
                continue
            calls.append(repr(args))
    return tuple(calls)


def program(answer: str) -> Program | None:
    """The answer's definitions and its entry function: the first one no other one calls."""
    body = statements(answer)
    functions = [s for s in body if isinstance(s, ast.FunctionDef)]
    if not functions:
        return None
    called = {
        node.func.id
        for f in functions
        for node in ast.walk(f)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id != f.name
    }
    entry = next((f for f in functions if f.name not in called), functions[0])
    kept: list[ast.stmt] = [
        s
        for s in body
        if isinstance(s, ast.FunctionDef | ast.ClassDef | ast.Import | ast.ImportFrom)
    ]
    return Program(
        source=ast.unparse(ast.Module(body=kept, type_ignores=[])),
        entry=entry.name,
        arity=len(entry.args.args),
        examples=literal_calls(body, entry.name),
    )


def behaviour(prog: Program, inputs: Sequence[str]) -> dict[str, str] | None:
    """What `prog` returns on each input of its arity (None: it did not load or had no input)."""
    mine = [text for text in inputs if len(ast.literal_eval(text)) == prog.arity]
    if not mine:
        return None
    job = json.dumps({"source": prog.source, "entry": prog.entry, "inputs": mine})
    with tempfile.TemporaryDirectory() as scratch:
        try:
            done = subprocess.run(
                [sys.executable, "-I", "-c", RUNNER],
                input=job,
                capture_output=True,
                text=True,
                timeout=20,
                cwd=scratch,
            )
        except subprocess.TimeoutExpired:
            return None
    lines = done.stdout.strip().splitlines()
    results = json.loads(lines[-1]) if lines else None
    return dict(zip(mine, results, strict=True)) if results else None


def agreement(a: dict[str, str] | None, b: dict[str, str] | None) -> float | None:
    """Share of inputs both ran on (not both failing) where they returned the same."""
    if a is None or b is None:
        return None
    shared = [
        k for k in a if k in b and not (a[k].startswith("error") and b[k].startswith("error"))
    ]
    return sum(a[k] == b[k] for k in shared) / len(shared) if shared else None


Runs = dict[str, dict[str, str] | None]
"""Each member's behaviour on one item's inputs."""


def behaviours(item: RecordedItem) -> Runs:
    programs = {m: program(item.outcomes[m].text) for m in CHEAP if m in item.outcomes}
    inputs = list(dict.fromkeys(x for p in programs.values() if p for x in p.examples))
    return {m: behaviour(p, inputs) if p else None for m, p in programs.items()}


def mean_agreement(
    runs: dict[str, dict[str, str] | None], member: str, others: Sequence[str]
) -> float:
    found = [
        v
        for o in others
        if o != member and (v := agreement(runs.get(member), runs.get(o))) is not None
    ]
    return sum(found) / len(found) if found else -1.0


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    right = [s for s, y in zip(scores, labels, strict=True) if y]
    wrong = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if r > w else 0.5 if r == w else 0.0 for r in right for w in wrong)
    return wins / (len(right) * len(wrong))


def share(items: Sequence[RecordedItem], value: Callable[[RecordedItem], float]) -> float:
    return sum(value(i) for i in items) / len(items)


def score(item: RecordedItem, model: str) -> float:
    return item.outcomes[model].score or 0.0


def cost(item: RecordedItem, model: str) -> float:
    outcome = item.outcomes.get(model)
    return (outcome.cost or 0.0) if outcome else 0.0


def escalation(items: Sequence[RecordedItem], runs: Sequence[Runs], others: Sequence[str]) -> None:
    """GPT-3.5 checked by its agreement with `others`; the least agreed go to GPT-4-Turbo."""
    members = (FIRST, *others)
    agreed = [mean_agreement(r, FIRST, others) for r in runs]
    right = [score(i, FIRST) > 0 for i in items]
    base = share(items, lambda i: sum(cost(i, m) for m in members))
    strong = share(items, lambda i: score(i, STRONG)), share(items, lambda i: cost(i, STRONG))
    print(
        f"\nGPT-3.5 checked against {len(others)} models ({base / strong[1]:.1%} of GPT-4's cost)"
    )
    print(f"  AUC of agreement for GPT-3.5 being right: {auc(agreed, right):.3f}")
    order = sorted(range(len(items)), key=lambda k: agreed[k])
    for k in (0, 15, 30, 45, 60):
        up = set(order[:k])
        acc = sum(score(item, STRONG if j in up else FIRST) for j, item in enumerate(items))
        spent = base + sum(cost(items[j], STRONG) for j in up) / len(items)
        print(
            f"  escalate the {k:2d} least agreed: {acc / len(items) / strong[0]:6.1%} of GPT-4's"
            f" accuracy at {spent / strong[1]:6.1%} of its cost"
        )


def pick_by_agreement(items: Sequence[RecordedItem], runs: Sequence[Runs]) -> None:
    """Answer with the member whose function agrees most with the others' (no GPT-4)."""
    strong = share(items, lambda i: score(i, STRONG)), share(items, lambda i: cost(i, STRONG))
    print(
        "\nAnswer with the member that agrees most with the others (ties: GPT-3.5, then cheaper):"
    )
    results = []
    for size in (1, 2, 3, 4):
        for others in itertools.combinations(CHEAP[1:], size - 1):
            members = (FIRST, *others)
            right = spent = 0.0
            for item, run in zip(items, runs, strict=True):
                pick = max(
                    members,
                    key=lambda m: (mean_agreement(run, m, members), m == FIRST, -cost(item, m)),
                )
                right += score(item, pick)
                spent += sum(cost(item, m) for m in members)
            results.append(
                (right / len(items) / strong[0], spent / len(items) / strong[1], members)
            )
    for acc, spent, members in sorted(results, reverse=True)[:6]:
        names = ", ".join(m.split("/")[-1] for m in members)
        print(f"  {acc:6.1%} of GPT-4's accuracy at {spent:6.1%} of its cost: {names}")


def pick_then_escalate(items: Sequence[RecordedItem], runs: Sequence[Runs]) -> None:
    """The most agreed member answers; the k items where it agrees least go to GPT-4-Turbo."""
    strong = share(items, lambda i: score(i, STRONG)), share(items, lambda i: cost(i, STRONG))
    print("\nMost agreed member answers, the least agreed go to GPT-4-Turbo (within 20 % of cost):")
    results = []
    for size in (2, 3, 4):
        for others in itertools.combinations(CHEAP[1:], size - 1):
            members = (FIRST, *others)
            picks, agreed, base = [], [], 0.0
            for item, run in zip(items, runs, strict=True):
                found = {m: mean_agreement(run, m, members) for m in members}
                pick = max(members, key=lambda m: (found[m], m == FIRST, -cost(item, m)))
                picks.append(pick)
                agreed.append(found[pick])
                base += sum(cost(item, m) for m in members)
            order = sorted(range(len(items)), key=lambda k: agreed[k])
            for k in range(0, 80, 5):
                up = set(order[:k])
                right = sum(
                    score(item, STRONG if j in up else picks[j]) for j, item in enumerate(items)
                )
                spent = base + sum(cost(items[j], STRONG) for j in up)
                results.append(
                    (right / len(items) / strong[0], spent / len(items) / strong[1], k, members)
                )
    within = sorted((r for r in results if r[1] <= 0.2), reverse=True)
    for acc, spent, k, members in within[:6]:
        names = ", ".join(m.split("/")[-1] for m in members)
        print(f"  {acc:6.1%} of GPT-4's accuracy at {spent:6.1%} of its cost (k={k}): {names}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", default="routerbench-train/mbpp_train.csv", help="under the shared data root"
    )
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    root = data_root()
    if root is None:
        raise SystemExit("no shared data: set MODELYARD_DATA")
    recorded = load_routerbench(root / args.data).items
    items = [i for i in recorded if FIRST in i.outcomes and STRONG in i.outcomes]
    with ThreadPoolExecutor(args.workers) as pool:
        runs = list(pool.map(behaviours, items))
    print(
        f"{len(items)} items; GPT-4-Turbo {share(items, lambda i: score(i, STRONG)):.1%} right;"
        f" GPT-3.5's function ran on shared inputs for"
        f" {sum(r.get(FIRST) is not None for r in runs)} of them"
    )
    escalation(items, runs, CHEAP[1:])
    escalation(items, runs, CHEAP[2:5])
    pick_by_agreement(items, runs)
    pick_then_escalate(items, runs)


if __name__ == "__main__":
    main()
