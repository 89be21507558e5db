"""health: every circuit breaker's state, optionally after probing each model itself."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import typer
from rich.markup import escape
from rich.table import Table

from modelyard.cli.app import app, console, fail, guarded
from modelyard.errors import ConfigError, ModelError
from modelyard.model import Model
from modelyard.resilience.fallback import FallbackModel
from modelyard.topology import unwrap
from modelyard.types import user
from modelyard.yard import Yard, load

_STYLE = {"closed": "green", "half-open": "yellow", "open": "red"}
_SHARED = ("redis", "postgres")
"""State backends whose circuits every process sees; the others count them per process."""


@dataclass(frozen=True, slots=True)
class Probe:
    """One model's answer to a tiny request."""

    model: str
    ok: bool
    outcome: str
    seconds: float


def _itself(name: str, model: Model) -> Model:
    """The model without its `fallbacks:` chain: a probe must reach the model named, or a
    down model reads as answered by its fallback (whose circuit the probes then open)."""
    node = unwrap(model)
    return node.chain[0] if isinstance(node, FallbackModel) and node.name == name else model


async def _probe(yard: Yard) -> list[Probe]:
    """One tiny request to each model itself, in name order."""
    results = []
    for name, model in sorted(yard.models.items()):
        started = time.perf_counter()
        try:
            request = user("ping", max_tokens=1).with_budget(30.0)
            response = await _itself(name, model).complete(request)
            ok, outcome = True, f"answered by {response.model}"
        except ModelError as exc:
            ok, outcome = False, f"{exc.kind}: {exc.message}"
        results.append(Probe(name, ok, outcome, time.perf_counter() - started))
    return results


async def _check(yard: Yard, probe: bool) -> tuple[list[Probe], dict[str, Any]]:
    for note in yard.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    try:
        probes = await _probe(yard) if probe else []
        return probes, (await yard.health()).to_dict()
    finally:
        await yard.aclose()


def _gateway_url(yard: Yard) -> str:
    """Where a gateway serving this config listens (a wildcard address is asked on loopback)."""
    spec = yard.loaded.config.gateway
    host = "127.0.0.1" if spec.host in ("0.0.0.0", "::", "") else spec.host
    return f"http://{host}:{spec.port}"


async def _ready(config: str, url: str) -> dict[str, Any] | None:
    """The /readyz of the gateway at `url`, when it serves `config` (its resolved path)."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as session,
            session.get(f"{url}/readyz") as reply,  # a 503 (draining) still has its body
        ):
            body = json.loads(await reply.read())
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None  # nothing listens there, or not a gateway
    if not isinstance(body, dict) or body.get("config") != config:
        return None  # a gateway serving another config
    return body if isinstance(body.get("health"), dict) else None


def _refused(ready: dict[str, Any] | None) -> dict[str, str] | None:
    """The refusal of the config file that a gateway's /readyz reports, if any."""
    refused = ready.get("config_refused") if ready else None
    return {k: str(v) for k, v in refused.items()} if isinstance(refused, dict) else None


@dataclass(frozen=True, slots=True)
class Report:
    """What `health` prints."""

    probes: list[Probe]
    health: dict[str, Any]
    disabled: dict[str, str]
    source: str
    refused: dict[str, str] | None = None
    """The gateway's `config_refused`: the file on disk that it refused, and why."""
    unloaded: str = ""
    """Why the config file does not load here (the gateway's report is shown instead)."""


def _from_gateway(config: Path, url: str, why: ConfigError) -> Report:
    """The report of the gateway at `url` serving `config`, which does not load here (the
    file it refused, as a rule); the ConfigError again when no gateway serving it answers."""
    ready = asyncio.run(_ready(str(config.resolve()), url))
    if ready is None:
        raise why
    disabled = ready.get("disabled")
    return Report(
        [],
        ready["health"],
        dict(disabled) if isinstance(disabled, dict) else {},
        f"the gateway serving it at {url}, with the config it loaded before",
        _refused(ready),
        str(why),
    )


def _when(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch).strftime("%H:%M:%S") if epoch else ""


@app.command()
def health(
    config: Annotated[Path, typer.Argument(help="The YAML config file.", show_default=False)],
    probe: Annotated[
        bool,
        typer.Option(
            "--probe",
            help="Send one tiny request to each model first, not through its fallbacks (costs); "
            "exit 1 if any fails.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    gateway: Annotated[
        str | None,
        typer.Option(
            "--gateway",
            help="Where the gateway serving the config listens, when not at the config's own "
            "address (serve --host/--port): http://HOST:PORT.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Show each circuit breaker: closed, open or half-open, failure rate, last error.

    With a shared state store (Redis, PostgreSQL) the circuits are those every replica sees.
    With the default (SQLite) or memory, each process counts its own: the circuits shown are
    those of the gateway serving this config at its configured address (or --gateway), when one
    answers there (without --probe), else this command's own, fresh.

    A config file the gateway refused to reload (it still serves the one before) is shown with
    when and why. With --gateway, a file that does not load here shows the gateway's report,
    then its error (exit 2).
    """

    def run() -> Report:
        url = gateway.rstrip("/") if gateway else ""
        try:
            yard = load(config)
        except ConfigError as exc:
            if not url or probe:  # nothing to ask, or asked for this command's own probes
                raise
            return _from_gateway(config, url, exc)
        url = url or _gateway_url(yard)
        disabled = dict(yard.built.disabled)  # models that cannot answer: no circuit shows them
        backend = yard.loaded.config.state.backend
        asked = gateway is not None or (backend not in _SHARED and not probe)
        ready = asyncio.run(_ready(str(config.resolve()), url)) if asked else None
        refused = _refused(ready)
        source = "the state store"
        if backend not in _SHARED and not probe:
            if ready is not None:
                asyncio.run(yard.aclose())
                return Report(
                    [], ready["health"], disabled, f"the gateway serving it at {url}", refused
                )
            source = (
                f"this command's own, fresh: state.backend {backend} keeps circuits in each "
                f"serving process, and no gateway serving this config answered at {url}/readyz"
            )
        elif probe and backend not in _SHARED:
            source = "this command's own, after its probes"
        return Report(*asyncio.run(_check(yard, probe)), disabled, source, refused)

    done = guarded(run)
    probes, report, disabled, source = done.probes, done.health, done.disabled, done.source
    if as_json:
        out = {**report, "disabled": disabled, "source": source}
        out["config_refused"] = done.refused
        if probe:
            out["probes"] = [asdict(p) for p in probes]
        console.print(json.dumps(out, indent=2), markup=False)
    else:
        for p in probes:
            console.print(f"probe {p.model}: {p.outcome} ({p.seconds * 1000:.0f} ms)", markup=False)
        table = Table(title=f"circuits in {config}, as {source}")
        for column in ("circuit", "state", "failure rate", "calls", "opened", "last error"):
            table.add_column(column)
        for c in report["circuits"]:
            state = str(c["state"])
            table.add_row(
                escape(str(c["scope"])),
                f"[{_STYLE.get(state, 'red')}]{state}[/]",
                f"{c['failure_rate']:.0%}",
                str(c["calls"]),
                _when(c["opened_at"]),
                escape(c["last_error"] or ""),
            )
        console.print(table)
        for name, why in sorted(disabled.items()):
            console.print(f"[red]disabled[/] {escape(name)}: {escape(why)}")
        if not report["circuits"]:
            console.print(
                "no circuits: every hosted model is disabled (above)"
                if disabled
                else "no circuits: the config has no hosted models or configured breakers"
            )
        if done.refused is not None:
            console.print(
                f"[red]config refused[/] at {escape(done.refused.get('at', '?'))}: the gateway "
                f"still serves the config it loaded before, not {escape(str(config))}: "
                f"{escape(done.refused.get('error', ''))}"
            )
    if done.unloaded:
        fail(f"{done.unloaded} (the gateway's report is above)")
    if not report["healthy"] or not all(p.ok for p in probes):
        raise typer.Exit(1)
