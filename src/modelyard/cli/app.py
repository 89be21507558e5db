"""The Typer application and the output helpers every command shares."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from modelyard.errors import BadRequestError, ConfigError, ModelError, NotFoundError
from modelyard.suggest import did_you_mean

if TYPE_CHECKING:
    from modelyard.yard import Yard

app = typer.Typer(
    name="modelyard",
    help="Multi-model AI systems from one YAML file: check, ask, serve, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # joins a docstring's wrapped lines, as help text is read
)


def _version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        print(f"modelyard {version('modelyard')}")
        raise typer.Exit()


@app.callback()
def _main(
    _: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Multi-model AI systems from one YAML file: check, ask, serve, evaluate."""


# No emoji codes: "file.yaml:100:" must not print as "file.yaml💯".
console = Console(highlight=False, soft_wrap=True, emoji=False)
if not console.is_terminal:
    console.width = max(console.width, 160)  # logs and pipes: keep trees and tables whole
# stderr is mostly read in logs and pipes: a line is never cut at 80 columns mid-sentence.
errors = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

T = TypeVar("T")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error and exit."""
    errors.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def check_target(yard: Yard, name: str, config: Path) -> None:
    """ConfigError (exit 2) unless `name` is a system or model in `yard`: a typo in a name is a
    usage error, not a failed call (exit 1 is `gate`'s "candidate is worse")."""
    if name not in yard.names():
        raise ConfigError(
            f"no system or model named {name!r}"
            + did_you_mean(name, yard.available(), listed="available"),
            path=str(config),
        )


def check_writable(path: Path, what: str, *, make_folder: bool = False) -> None:
    """Exit 2 unless a file can be written at `path` (its folder made first when
    `make_folder`). Commands check their outputs before they run, so a mistyped path does not
    throw the whole run away at the end. Leaves no file behind."""
    where = f"cannot write {what} to {path}"
    if make_folder:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            fail(f"{where}: cannot create its folder ({exc.strerror})")
    if not path.parent.is_dir():
        fail(f"{where}: no such folder {path.parent}")
    if path.is_dir():
        fail(f"{where}: it is a folder")
    existed = path.exists()
    try:
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        fail(f"{where}: {exc.strerror}")
    if not existed:
        path.unlink(missing_ok=True)


def guarded(function: Callable[[], T]) -> T:
    """Run `function`, turning modelyard's errors into one clear line and an exit code."""
    try:
        return function()
    except ConfigError as exc:
        fail(str(exc))
    except BadRequestError as exc:  # the input given on the command line: a usage error
        fail(f"{exc.model}: {exc.message}" if exc.model else exc.message)
    except NotFoundError as exc:
        # A model raised it (a provider does not know the model, a replay has no recording of
        # the prompt): the call failed. Else it names what the command line asked for.
        if exc.provider is not None or exc.model is not None:
            fail(_located(exc), code=1)
        fail(exc.message)  # a name given on the command line that the config lacks
    except ModelError as exc:
        fail(_located(exc), code=1)
    except OSError as exc:  # a full disk or a closed pipe: no traceback, and not exit 1
        fail(f"{exc.filename}: {exc.strerror}" if exc.filename else f"output failed: {exc}")
    except KeyboardInterrupt:
        errors.print("interrupted")
        sys.exit(130)


def _located(exc: ModelError) -> str:
    """A failed call's error, with where in the system's graph it arose when that was deeper
    than the node asked (a leaf's name alone does not say which stage or route it was)."""
    return f"{exc} (at {exc.where})" if exc.where else str(exc)
