"""The Typer application and the output helpers every command shares."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from modelyard.errors import ConfigError, ModelError

app = typer.Typer(
    name="modelyard",
    help="Multi-model AI systems from one YAML file: check, ask, serve, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# No emoji codes: "file.yaml:100:" must not print as "file.yaml💯".
console = Console(highlight=False, soft_wrap=True, emoji=False)
if not console.is_terminal:
    console.width = max(console.width, 160)  # logs and pipes: keep trees and tables whole
errors = Console(stderr=True, highlight=False, emoji=False)

T = TypeVar("T")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error and exit."""
    errors.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def guarded(function: Callable[[], T]) -> T:
    """Run `function`, turning modelyard's errors into one clear line and an exit code."""
    try:
        return function()
    except ConfigError as exc:
        fail(str(exc))
    except ModelError as exc:
        fail(str(exc), code=1)
    except KeyboardInterrupt:
        errors.print("interrupted")
        sys.exit(130)
