"""check, ask, models, schema: the commands that need nothing but a config file."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from modelyard.cli.app import app, check_target, check_writable, console, errors, guarded
from modelyard.config.schema import Config
from modelyard.cost.prices import usd
from modelyard.errors import ModelError
from modelyard.model import Model
from modelyard.topology import edges, entry_points, unwrap
from modelyard.types import ChatResponse, Decision
from modelyard.yard import Yard, load

ConfigPath = Annotated[Path, typer.Argument(help="The YAML config file.", show_default=False)]


def _label(model: Model) -> str:
    details = model.describe()
    kind = details.pop("kind", "")
    extra = escape(", ".join(f"{k}={v}" for k, v in details.items()))
    text = f"[bold]{escape(model.name)}[/] [dim]{kind}[/]"
    return f"{text} [cyan]{extra}[/]" if extra else text


def model_tree(
    model: Model, tree: Tree | None = None, *, role: str = "", shown: set[int] | None = None
) -> Tree:
    """The graph under `model` as a Rich tree: each child with its role (a route, a stage, a
    label); a node with children that was drawn already (in `shown`) is named, not redrawn."""
    shown = set() if shown is None else shown
    node = unwrap(model)
    label = (f"[magenta]{escape(role)}:[/] " if role else "") + _label(model)
    parts = edges(node)
    again = bool(parts) and id(node) in shown
    if again:
        label = f"[bold]{escape(model.name)}[/] [dim](shown above)[/]"
        label = (f"[magenta]{escape(role)}:[/] " if role else "") + label
    branch = Tree(label) if tree is None else tree.add(label)
    if again:
        return branch
    shown.add(id(node))
    for edge in parts:
        model_tree(edge.child, branch, role=edge.role, shown=shown)
    return branch


def decision_tree(decision: Decision, tree: Tree | None = None) -> Tree:
    """A decision record as a Rich tree."""
    # Reasons quote answers and prompts, errors the provider's words: text, never markup.
    text = f"[bold]{escape(decision.node)}[/] [dim]{decision.kind}[/]"
    if decision.chosen:
        text += f" -> {escape(decision.chosen)}"
    text += f" [dim]{escape(decision.reason)}  {decision.latency_ms:.1f} ms"
    text += f"  ${usd(decision.cost)}[/]"  # an embedding's micro-dollars must not read as 0
    if decision.error:
        text += f" [red]{escape(decision.error)}[/]"
    node = Tree(text) if tree is None else tree.add(text)
    for child in decision.children:
        decision_tree(child, node)
    return node


@app.command()
def check(config: ConfigPath) -> None:
    """Validate a config and print each system's graph as a tree."""

    def run() -> None:
        yard = load(config)
        console.print(f"[green]ok[/] {config} (version {yard.version})")
        for note in yard.notes:
            console.print(f"[yellow]note:[/] {escape(note)}")
        for warning in yard.built.warnings:
            console.print(f"[yellow]warning:[/] {escape(warning)}")
        shown: set[int] = set()
        for name in entry_points(yard.systems):
            # Wrapped, not cropped: a long line (a cascade's stages) must stay whole.
            console.print(model_tree(yard.systems[name], shown=shown), soft_wrap=False)
        if not yard.systems:
            console.print(f"{len(yard.models)} models, no systems")

    guarded(run)


def _print_response(response: ChatResponse, elapsed: float, trace: bool) -> None:
    usage = response.usage
    # On stderr, like the notes: stdout holds the answer alone, so `$(modelyard ask ...)` works.
    errors.print(
        f"[dim]model[/] {escape(response.model)} [dim]({escape(response.provider_model)})  "
        f"tokens[/] {usage.input_tokens} in / {usage.output_tokens} out"
        f"{' (estimated)' if usage.estimated else ''}  "
        f"[dim]cost[/] ${usd(response.cost)}  [dim]latency[/] {elapsed * 1000:.0f} ms"
    )
    if trace and response.decision is not None:
        # Wrapped, not cropped (a pipe is 160 columns): a record pasted into a bug report
        # must keep its reasons, latencies and costs.
        console.print(decision_tree(response.decision), soft_wrap=False)


async def _ask(
    yard: Yard, system: str, prompt: str, stream: bool, max_tokens: int | None
) -> tuple[ChatResponse, float]:
    started = time.perf_counter()
    fields = {"max_tokens": max_tokens} if max_tokens is not None else {}
    try:
        if not stream:
            response = await yard.complete(system, prompt, **fields)
            console.print(response.text, markup=False)
            return response, time.perf_counter() - started
        final = None
        async for chunk in yard.stream(system, prompt, **fields):
            if chunk.text:
                console.print(chunk.text, end="", markup=False)
            if chunk.response is not None:
                final = chunk.response
        console.print()
        assert final is not None
        return final, time.perf_counter() - started
    finally:
        await yard.aclose()


@app.command()
def ask(
    config: ConfigPath,
    system: Annotated[str, typer.Argument(help="A system or model name from the config.")],
    prompt: Annotated[str, typer.Argument(help="What to ask.")],
    stream: Annotated[
        bool, typer.Option("--stream", help="Print the answer as it streams.")
    ] = False,
    trace: Annotated[bool, typer.Option("--trace", help="Print the decision record.")] = False,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Cap the answer's length.")] = None,
) -> None:
    """Ask one question: the answer on stdout; the model, tokens, cost and latency on stderr."""

    def run() -> None:
        yard = load(config)
        for note in yard.notes:
            errors.print(f"[yellow]note:[/] {escape(note)}")
        check_target(yard, system, config)
        try:
            response, elapsed = asyncio.run(_ask(yard, system, prompt, stream, max_tokens))
        except ModelError as exc:  # the record of a failure says what ran, and where it broke
            if trace and exc.decision is not None:
                console.print(decision_tree(exc.decision), soft_wrap=False)
            raise
        _print_response(response, elapsed, trace)

    guarded(run)


@app.command()
def models(config: ConfigPath) -> None:
    """List the config's models with their prices and capabilities."""

    def run() -> None:
        yard = load(config)
        table = Table(title=f"models in {config}")
        for column in ("name", "kind", "provider", "id", "$/M in", "$/M out", "context", "can"):
            table.add_column(column)
        for name, model in sorted(yard.models.items()):
            info = model.info
            caps = info.capabilities
            can = [
                c
                for c in (
                    "streaming",
                    "tools",
                    "vision",
                    "json_schema",
                    "logprobs",
                    "prefill",
                    "reasoning",
                )
                if getattr(caps, c)
            ]
            status = yard.built.disabled.get(name)
            table.add_row(
                name + (" [red](disabled)[/]" if status else ""),
                info.kind,
                info.provider or "local",
                info.model_id or "",
                f"{info.price.input:g}",
                f"{info.price.output:g}",
                f"{caps.context_window:,}" if caps.context_window else "",
                " ".join(can),
            )
        console.print(table)

    guarded(run)


@app.command()
def schema(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file.")
    ] = None,
) -> None:
    """Print (or write) the JSON Schema of the config file, for editors."""
    text = json.dumps(Config.model_json_schema(), indent=2)
    if output is None:
        console.print(text, markup=False)
    else:
        check_writable(output, "the schema")
        output.write_text(text + "\n", encoding="utf-8")
        console.print(f"wrote {output}")
