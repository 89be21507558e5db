"""Checks that need the whole file: names that must exist, names that must not clash, no cycles,
and what an unset environment variable means for each provider."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator

from modelyard.config.loader import MISSING_ENV, LoadedConfig, Loc, dotted
from modelyard.config.nodes import NodeSpec
from modelyard.suggest import did_you_mean


def node_refs(spec: NodeSpec, loc: Loc) -> Iterator[tuple[str, Loc]]:
    """Every model or system name a node spec refers to, with where it appears."""
    if isinstance(spec, str):
        yield spec, loc
        return
    for child, where in spec.child_nodes():
        yield from node_refs(child, (*loc, *where))


def _inline_names(spec: NodeSpec, loc: Loc) -> Iterator[tuple[str, Loc]]:
    """Every name given to an inline node of `spec` (itself included), with where it is."""
    if isinstance(spec, str):
        return
    if spec.name is not None:
        yield spec.name, loc
    for child, where in spec.child_nodes():
        yield from _inline_names(child, (*loc, *where))


def disabled_providers(loaded: LoadedConfig) -> dict[str, str]:
    """Optional providers whose variables are unset, with the reason; raises for required ones."""
    disabled: dict[str, str] = {}
    for loc, variable in loaded.missing_env.items():
        if len(loc) >= 2 and loc[0] == "providers":
            name = str(loc[1])
            if loaded.config.providers[name].optional:
                disabled[name] = f"environment variable {variable} is not set"
                continue
            raise loaded.error(
                loc,
                f"environment variable {variable} is not set; set it, or mark provider "
                f"{name!r} optional: true to run without it",
            )
        raise loaded.error(loc, f"environment variable {variable} is not set")
    return disabled


def check_references(loaded: LoadedConfig) -> None:
    """Raise ConfigError for the first dangling name, clash or cycle, naming where it is."""
    config = loaded.config
    providers: list[tuple[Loc, str | None]] = [
        *((("models", name, "provider"), model.provider) for name, model in config.models.items()),
        *(
            (("embedders", name, "provider"), embedder.provider)
            for name, embedder in config.embedders.items()
        ),
    ]
    for loc, provider in providers:
        if provider is not None and provider not in config.providers:
            hint = did_you_mean(provider, sorted(config.providers), listed="defined providers")
            raise loaded.error(loc, f"unknown provider {provider!r}{hint}")
    for name in config.systems:
        if name in config.models:
            raise loaded.error(
                ("systems", name),
                f"{name!r} is both a model and a system; rename one of them",
            )
    known = set(config.models) | set(config.systems)
    unknown = [
        (ref, loc)
        for name, spec in config.systems.items()
        for ref, loc in node_refs(spec, ("systems", name))
        if ref not in known and ref != MISSING_ENV
    ]
    if unknown:  # every one at once, as schema errors are: a rename leaves several behind
        ref, loc = unknown[0]
        more = "".join(
            f"\n  {loaded.path}:{loaded.line(where)}: {dotted(where)}: "
            f"{_not_a_node(name, config.embedders, known, listed=None)}"
            for name, where in unknown[1:]
        )
        raise loaded.error(loc, f"{_not_a_node(ref, config.embedders, sorted(known))}{more}")
    _check_inline_names(loaded)
    _check_cycles(loaded)


def _not_a_node(
    name: str, embedders: Collection[str], known: Iterable[str], *, listed: str | None = "known"
) -> str:
    """Why `name` cannot be where a node (a model or system) is expected."""
    if name in embedders:
        return (
            f"{name!r} is an embedder, which answers no chat request; name a model or system "
            "here (an embedder serves a router's semantic or learned routing, a classifier or "
            "a retriever)"
        )
    return f"unknown model or system {name!r}{did_you_mean(name, known, listed=listed)}"


def _check_inline_names(loaded: LoadedConfig) -> None:
    """Decision records tell a system's nodes apart by name: no two inline nodes share one,
    and none takes a model's or a system's."""
    config = loaded.config
    for system, spec in config.systems.items():
        seen: dict[str, Loc] = {}
        for name, loc in _inline_names(spec, ("systems", system)):
            if name in config.models or name in config.systems:
                kind = "model" if name in config.models else "system"
                raise loaded.error(
                    (*loc, "name"),
                    f"an inline node is called {name!r}, as a {kind} is; give it a name of its "
                    "own, so decision records can tell them apart",
                )
            if name in seen:
                raise loaded.error(
                    (*loc, "name"),
                    f"two nodes of system {system!r} are called {name!r} (the other is at "
                    f"{dotted(seen[name])}); give each its own name, so decision records can "
                    "tell them apart",
                )
            seen[name] = loc


def _check_cycles(loaded: LoadedConfig) -> None:
    systems: dict[str, NodeSpec] = loaded.config.systems
    edges = {
        name: [(ref, loc) for ref, loc in node_refs(spec, ("systems", name)) if ref in systems]
        for name, spec in systems.items()
    }
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for ref, loc in edges[name]:
            if state.get(ref) == 1:
                cycle = " -> ".join([*trail[trail.index(ref) :], ref]) if ref in trail else ref
                raise loaded.error(
                    loc, f"systems form a cycle: {cycle}; a system cannot contain itself"
                )
            if ref not in state:
                visit(ref, [*trail, ref])
        state[name] = 2

    for name in systems:
        if name not in state:
            visit(name, [name])


__all__ = ["check_references", "disabled_providers", "dotted", "node_refs"]
