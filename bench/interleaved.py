"""Two source trees timed side by side: each round runs a child script once per tree, each run a
fresh process with that tree's `src` on its path, so both see the same machine load."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path


def trees_parser(description: str, *, rounds: int) -> argparse.ArgumentParser:
    """A command line taking the two trees (`--before`, `--after`) and the rounds."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--before", required=True, help="the src folder of the tree before")
    parser.add_argument("--after", default="src", help="the src folder of the tree after")
    parser.add_argument("--rounds", type=int, default=rounds)
    return parser


def run_child(src: str, child: str, *args: object) -> float:
    """Run `child` (Python source printing one JSON number) with `src` on its path."""
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
    out = subprocess.run(
        [sys.executable, "-c", child, *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout))


def interleave(
    args: argparse.Namespace, child: str, *child_args: object
) -> tuple[list[float], list[float]]:
    """Each tree's figure from every round (`args` from `trees_parser`), before's run first."""
    before: list[float] = []
    after: list[float] = []
    for _ in range(args.rounds):
        before.append(run_child(args.before, child, *child_args))
        after.append(run_child(args.after, child, *child_args))
    return before, after


def window_bench(description: str, child: str, backend: str, *, calls: int) -> None:
    """A window benchmark's command line run: `child` takes (entries, calls) and prints a rate;
    each tree's calls per second is printed, the median and every round, and the ratio."""
    parser = trees_parser(description, rounds=3)
    parser.add_argument("--entries", type=int, default=5000)
    parser.add_argument("--calls", type=int, default=calls)
    args = parser.parse_args()
    before, after = interleave(args, child, args.entries, args.calls)
    b, a = statistics.median(before), statistics.median(after)
    print(f"{backend} window_acquire, {args.entries} entries in the window, {args.calls} calls")
    print(f"before: {b:,.0f} calls/s  (rounds: {', '.join(f'{x:,.0f}' for x in before)})")
    print(f"after:  {a:,.0f} calls/s  (rounds: {', '.join(f'{x:,.0f}' for x in after)})")
    print(f"after / before: {a / b:.1f}x")
