"""check, ask, models, schema: the commands that need nothing but a config file."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.tree import Tree

from modelyard.cli.app import app, console, guarded
from modelyard.config.schema import Config
from modelyard.model import Model
from modelyard.types import ChatResponse, Decision
from modelyard.yard import Yard, load

ConfigPath = Annotated[Path, typer.Argument(help="The YAML config file.", show_default=False)]


def _label(model: Model) -> str:
    details = model.describe()
    kind = details.pop("kind", "")
    extra = ", ".join(f"{k}={v}" for k, v in details.items())
    text = f"[bold]{model.name}[/] [dim]{kind}[/]"
    return f"{text} [cyan]{extra}[/]" if extra else text


def model_tree(model: Model, tree: Tree | None = None, seen: frozenset[int] = frozenset()) -> Tree:
    """The graph under `model` as a Rich tree (a shared node is shown once per path)."""
    node = Tree(_label(model)) if tree is None else tree.add(_label(model))
    if id(model) in seen:
        return node
    # Wrappers that keep their model's name (retry, breaker, limits) are one node on screen:
    # the outermost's label already lists their settings.
    inner = model
    while len(inner.children) == 1 and inner.children[0].name == inner.name:
        inner = inner.children[0]
    for child in inner.children:
        model_tree(child, node, seen | {id(model)})
    return node


def decision_tree(decision: Decision, tree: Tree | None = None) -> Tree:
    """A decision record as a Rich tree."""
    text = f"[bold]{decision.node}[/] [dim]{decision.kind}[/]"
    if decision.chosen:
        text += f" -> {decision.chosen}"
    text += f" [dim]{decision.reason}  {decision.latency_ms:.1f} ms  ${decision.cost:.6f}[/]"
    if decision.error:
        text += f" [red]{decision.error}[/]"
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
            console.print(f"[yellow]note:[/] {note}")
        for warning in yard.built.warnings:
            console.print(f"[yellow]warning:[/] {warning}")
        for _, system in sorted(yard.systems.items()):
            console.print(model_tree(system))
        if not yard.systems:
            console.print(f"{len(yard.models)} models, no systems")

    guarded(run)


def _print_response(response: ChatResponse, elapsed: float, trace: bool) -> None:
    usage = response.usage
    console.print(
        f"[dim]model[/] {response.model} [dim]({response.provider_model})  "
        f"tokens[/] {usage.input_tokens} in / {usage.output_tokens} out"
        f"{' (estimated)' if usage.estimated else ''}  "
        f"[dim]cost[/] ${response.cost:.6f}  [dim]latency[/] {elapsed * 1000:.0f} ms"
    )
    if trace and response.decision is not None:
        console.print(decision_tree(response.decision))


async def _ask(
    yard: Yard, system: str, prompt: str, stream: bool, max_tokens: int | None
) -> tuple[ChatResponse, float]:
    started = time.perf_counter()
    fields = {"max_tokens": max_tokens} if max_tokens else {}
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
    max_tokens: Annotated[int | None, typer.Option(help="Cap the answer's length.")] = None,
) -> None:
    """Ask one question; print the answer, which model answered, tokens, cost and latency."""

    def run() -> None:
        yard = load(config)
        for note in yard.notes:
            console.print(f"[yellow]note:[/] {note}")
        response, elapsed = asyncio.run(_ask(yard, system, prompt, stream, max_tokens))
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
                for c in ("streaming", "tools", "vision", "json_schema", "logprobs", "prefill")
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
        output.write_text(text + "\n", encoding="utf-8")
        console.print(f"wrote {output}")
