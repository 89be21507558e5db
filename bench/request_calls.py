"""Python calls a request on the gateway's path: `bench/request_path.py` under cProfile, a run
of N requests a system against a run of none, each in its own process (imports and start-up
cancel out), (calls of N - calls of 0) / (2 N) over its two systems. Calls move far less than
time on a shared host, and need no valgrind.

    .venv/bin/python bench/request_calls.py            # N = 300
    .venv/bin/python bench/request_calls.py 300 key    # the modes of request_path.py
"""

from __future__ import annotations

import cProfile
import pstats
import runpy
import subprocess
import sys
from pathlib import Path

PATH = Path(__file__).with_name("request_path.py")


def _profiled(argv: list[str]) -> None:
    """Run request_path.py with `argv` under cProfile; print its total calls."""
    sys.argv = [str(PATH), *argv]
    profile = cProfile.Profile()
    profile.enable()
    try:
        runpy.run_path(str(PATH), run_name="__main__")
    finally:
        profile.disable()
    print("calls", pstats.Stats(profile).total_calls)


def _calls(requests: int, modes: list[str]) -> int:
    out = subprocess.run(
        [sys.executable, __file__, "--profiled", str(requests), *modes],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.rsplit("calls", 1)[1])


def main(requests: int, modes: list[str]) -> None:
    none, some = _calls(0, modes), _calls(requests, modes)
    print(
        f"{(some - none) / (2 * requests):.1f} calls a request ({none} at 0, {some} at {requests})"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--profiled"]:
        _profiled(sys.argv[2:])
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 300, sys.argv[2:])
