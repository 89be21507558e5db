"""The `modelyard` command: thin wrappers that parse arguments and call the library.

Each group of commands lives in its own module and registers itself on `app`.
"""

from __future__ import annotations

from modelyard.cli import (  # noqa: F401  (each module registers its commands)
    basic,
    costs,
    demo,
    drill,
    evaluate,
    handover,
    health,
    load,
    serve,
    traffic,
    train,
)
from modelyard.cli.app import app


def main() -> None:
    """Entry point of the `modelyard` console script."""
    app()


__all__ = ["app", "main"]
