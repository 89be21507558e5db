"""serve and keys: running the gateway and managing its virtual keys."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.table import Table

from modelyard.cli.app import app, console, fail, guarded
from modelyard.cli.basic import ConfigPath
from modelyard.errors import UnavailableError
from modelyard.suggest import did_you_mean

if TYPE_CHECKING:
    from modelyard.config.loader import LoadedConfig
    from modelyard.gateway.keys import KeyStore

T = TypeVar("T")

keys_app = typer.Typer(
    help="Create, list and revoke the gateway's virtual API keys.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")


@app.command()
def serve(
    config: ConfigPath,
    host: Annotated[
        str | None, typer.Option(help="Interface to bind (default: config, then 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default: config, then 8080).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Worker processes on this host: budgets, rate limits (a key's rpm, tpm and "
            "max_concurrency too) and circuits are shared through the state store (sqlite, the "
            "default, or redis/postgres); a model's or a provider's max_concurrency is per "
            "process (docs/operations.md).",
        ),
    ] = None,
) -> None:
    """Serve the config's systems over the OpenAI and Anthropic APIs."""
    from modelyard.gateway.server import serve as run

    guarded(lambda: run(config, host=host, port=port, workers=workers))


def _with_store(
    config: Path,
    work: Callable[[KeyStore], Awaitable[T]],
    loaded: LoadedConfig | None = None,
) -> T:
    """`work` on the config's key store (the shared one when `gateway.keys_url` is set), then
    closed; a store that cannot be reached fails naming its setting. `loaded` is the config
    when the caller has already read it."""
    from modelyard.config.loader import load_config
    from modelyard.gateway.keys_postgres import key_store

    loaded = loaded or load_config(config)
    spec = loaded.config.gateway
    store = key_store(spec, loaded.local_path(spec.keys_db))

    async def go() -> T:
        try:
            return await work(store)
        finally:
            await store.aclose()

    try:
        return asyncio.run(go())
    except UnavailableError as exc:
        fail(f"{config}: {exc.message}", code=1)


@keys_app.command("create")
def keys_create(
    config: ConfigPath,
    name: Annotated[str, typer.Option(help="Who the key is for.")],
    system: Annotated[
        list[str] | None,
        typer.Option("--system", "-s", help="A system the key may use (repeat); default all."),
    ] = None,
    rpm: Annotated[
        int | None, typer.Option(min=1, help="Requests per minute for this key.")
    ] = None,
    tpm: Annotated[
        int | None,
        typer.Option(min=1, help="Tokens per minute for this key (prompt plus answer)."),
    ] = None,
    budget: Annotated[float | None, typer.Option(help="USD per month for this key.")] = None,
    max_concurrency: Annotated[
        int | None, typer.Option(min=1, help="Requests in flight at once.")
    ] = None,
) -> None:
    """Create a key; its secret is printed once and never stored."""

    def run() -> None:
        from modelyard.config.loader import load_config

        if budget is not None and not budget > 0:  # as the admin route: no key that cannot spend
            fail("--budget: expected a positive number of USD")
        loaded = load_config(config)
        spec = loaded.config
        names = {*spec.systems, *spec.models}
        unknown = [s for s in system or () if s != "*" and s not in names]
        if unknown:  # a key for a name the config lacks could never be used
            fail(
                f"no system or model named {unknown[0]!r} in {config}"
                + did_you_mean(unknown[0], sorted(names), listed="available")
            )
        secret, key = _with_store(
            config,
            lambda store: store.create(
                name,
                systems=system or ["*"],
                rpm=rpm,
                tpm=tpm,
                budget=budget,
                max_concurrency=max_concurrency,
            ),
            loaded,
        )
        console.print(f"created {key.id} for {name!r} (systems: {', '.join(key.systems)})")
        console.print(f"secret (shown once): [bold]{secret}[/]")

    guarded(run)


@keys_app.command("list")
def keys_list(config: ConfigPath) -> None:
    """List keys (never their secrets)."""

    def run() -> None:
        table = Table()
        for column in (
            "id", "name", "systems", "rpm", "tpm", "max_concurrency", "budget", "status"
        ):  # fmt: skip
            table.add_column(column)
        for key in _with_store(config, lambda store: store.all()):
            table.add_row(
                key.id,
                key.name,
                ", ".join(key.systems),
                str(key.rpm or ""),
                str(key.tpm or ""),
                str(key.max_concurrency or ""),
                f"{key.budget:g}" if key.budget else "",
                "revoked" if key.revoked else "active",
            )
        console.print(table)

    guarded(run)


@keys_app.command("revoke")
def keys_revoke(
    config: ConfigPath, key_id: Annotated[str, typer.Argument(help="The key's id.")]
) -> None:
    """Revoke a key; a running gateway refuses it within a second (on every replica when the
    keys are shared through `gateway.keys_url`)."""

    def run() -> None:
        if not _with_store(config, lambda store: store.revoke(key_id)):
            fail(f"no active key {key_id!r}; `modelyard keys list {config}` shows the active keys")
        console.print(f"revoked {key_id}")

    guarded(run)
