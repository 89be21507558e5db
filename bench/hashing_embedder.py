"""How long the hashing embedder takes per text, on the recorded GSM8K answers and MMLU prompts
(best of 3 passes; each pass with a fresh embedder, so its trigram table starts empty).

    .venv/bin/python bench/hashing_embedder.py
    .venv/bin/python bench/hashing_embedder.py --against OLD/src/modelyard/providers/local_basic.py

`--against` times another version's embedder side by side in the same process (e.g. a
`git worktree` of an earlier commit) and checks that both give the same vectors.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from modelyard.evaluation.formats import load_recordings
from modelyard.evaluation.recordings import resolve_data_path
from modelyard.model import ModelInfo
from modelyard.providers.local_basic import HashingEmbedder

Make = Callable[[], HashingEmbedder]


def shared(relative: str) -> Path:
    return resolve_data_path(f"shared:{relative}", Path.cwd())


def corpora() -> dict[str, list[str]]:
    """GSM8K prompt + Mixtral's answer (what the learned check reads) and MMLU prompts."""
    gsm8k = load_recordings("routellm-gsm8k", [shared("routellm/gsm8k/gsm8k_responses.csv")])
    mixtral = "mistralai/Mixtral-8x7B-Instruct-v0.1"
    mmlu = load_recordings("routellm-mmlu", [shared("routellm/mmlu/responses")])
    return {
        "GSM8K prompt + answer": [i.prompt + "\n" + i.outcomes[mixtral].text for i in gsm8k.items],
        "MMLU prompt": [i.prompt for i in mmlu.items],
    }


def seconds_per_text(make: Make, texts: Sequence[str]) -> float:
    best = float("inf")
    for _ in range(3):
        embedder = make()
        started = time.perf_counter()
        for text in texts:
            embedder.vector(text)
        best = min(best, time.perf_counter() - started)
    return best / len(texts)


def maker(module_file: Path | None) -> Make:
    cls = HashingEmbedder
    if module_file is not None:
        spec = importlib.util.spec_from_file_location("other_local_basic", module_file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cls = module.HashingEmbedder
    return lambda: cls(ModelInfo(name="hash", kind="hashing"), 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", type=Path, help="another version's local_basic.py")
    args = parser.parse_args()
    this = maker(None)
    other = maker(args.against) if args.against else None
    for name, texts in corpora().items():
        chars = sum(map(len, texts)) / len(texts)
        now = seconds_per_text(this, texts)
        line = f"{name}: {len(texts)} texts of {chars:.0f} characters; {now * 1e6:.0f} µs a text"
        if other is not None:
            sample = texts[:500]
            a, b = this(), other()
            same = all(a.vector(t) == b.vector(t) for t in sample)
            then = seconds_per_text(other, texts)
            line += f"; --against {then * 1e6:.0f} µs ({then / now:.1f}x); same vectors: {same}"
        print(line)


if __name__ == "__main__":
    main()
