"""`modelyard eval --json` on large labelled files: peak RSS and wall time per file size, for
one or more source trees (a fresh process per run), with no network.

    .venv/bin/python bench/eval_memory.py --src src --sizes 10000,50000,200000
    .venv/bin/python bench/eval_memory.py --src /tmp/before/src --src src --sizes 50000

Each size is a synthetic labelled JSONL file made at run time (multiple-choice prompts of
about 700 characters, a gold letter drawn from the prompt as `evaluation/synthetic.py` draws
it), evaluated by a vote of three in-process models that answer right 50, 65 and 80 % of the
time (`wait: in_turn`, so the third is asked only when the first two disagree). Peak RSS and
wall time come from `/usr/bin/time -v`; the `--json` output goes to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from modelyard.evaluation.recordings import stable_hash
from modelyard.evaluation.synthetic import choice_answer, pseudo_gold
from modelyard.types import ChatRequest

CONFIG = """
models:
  weak: {local: {type: callable, function: "eval_memory:weak"}, price: {input: 0.2, output: 0.6}}
  mid: {local: {type: callable, function: "eval_memory:mid"}, price: {input: 1, output: 3}}
  strong: {local: {type: callable, function: "eval_memory:strong"}, price: {input: 5, output: 15}}
systems:
  main: {type: ensemble, members: [weak, mid, strong], normalise: choice, wait: in_turn}
"""

FILLER = (
    "Read the passage and choose the option that best completes it. The passage describes a "
    "routine measurement taken in a laboratory, the instruments used and the conditions under "
    "which the readings were recorded, and asks which conclusion the readings support. "
)


def _answer(request: ChatRequest, name: str, percent_right: int) -> str:
    prompt = request.last_user_text
    right = stable_hash("right", prompt, name) % 100 < percent_right
    return f"The answer is {choice_answer(prompt, name, right)}."


async def weak(request: ChatRequest) -> str:
    """Right about half the time."""
    return _answer(request, "weak", 50)


async def mid(request: ChatRequest) -> str:
    """Right about 65 % of the time."""
    return _answer(request, "mid", 65)


async def strong(request: ChatRequest) -> str:
    """Right about 80 % of the time."""
    return _answer(request, "strong", 80)


def prompt(n: int) -> str:
    """Question `n`: the filler, the item's own words and four options."""
    options = "\n".join(f"{letter}. option {letter} of item {n}" for letter in "ABCD")
    return f"{FILLER}{FILLER}Item {n}: which reading supports the conclusion?\n{options}\n"


def write_set(path: Path, size: int) -> None:
    """A labelled JSONL file of `size` items."""
    with path.open("w", encoding="utf-8") as handle:
        for n in range(size):
            text = prompt(n)
            row = {"id": f"item-{n}", "prompt": text, "label": pseudo_gold(text), "split": "test"}
            handle.write(json.dumps(row) + "\n")


def measure(src: Path, config: Path, data: Path, out: Path) -> tuple[float, float]:
    """Peak RSS (MB) and wall time (s) of one `eval --json` run."""
    env = {
        **os.environ,
        "PYTHONPATH": f"{src.resolve()}{os.pathsep}{Path(__file__).resolve().parent}",
    }
    command = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        "-m",
        "modelyard",
        "eval",
        str(config),
        "main",
        "--data",
        str(data),
        "--scorer",
        "choice",
        "--json",
    ]
    with out.open("w") as handle:
        done = subprocess.run(command, env=env, stdout=handle, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"eval failed ({done.returncode}):\n{done.stderr[-2000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", done.stderr)
    assert rss and wall, done.stderr[-2000:]
    seconds = sum(float(part) * 60**i for i, part in enumerate(reversed(wall[1].split(":"))))
    return int(rss[1]) / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", action="append", type=Path, required=True)
    parser.add_argument("--sizes", default="10000,50000,200000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        config = root / "vote.yaml"
        config.write_text(CONFIG, encoding="utf-8")
        print("| source | items | file MB | peak RSS MB | wall s | accuracy |")
        print("|---|---|---|---|---|---|")
        for size in (int(s) for s in args.sizes.split(",")):
            data = root / f"set-{size}.jsonl"
            write_set(data, size)
            for src in args.src:
                out = root / "out.json"
                rss, wall = measure(src, config, data, out)
                accuracy = json.loads(out.read_text())["report"]["accuracy"]
                mb = data.stat().st_size / 1e6
                print(f"| {src} | {size} | {mb:.0f} | {rss:.0f} | {wall:.1f} | {accuracy:.4f} |")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
