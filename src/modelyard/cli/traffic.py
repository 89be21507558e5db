"""traffic: write the gateway's captured traffic as a labelled set, to replay it against
another config with `eval`, `compare` or `gate`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from modelyard.cli.app import app, console, fail, guarded
from modelyard.config.loader import load_config
from modelyard.evaluation.export import traffic_rows, write_jsonl
from modelyard.observability.decision_log import exchange_dicts, read_traffic
from modelyard.observability.request_log_postgres import shared_request_log


@app.command()
def traffic(
    config: Annotated[
        Path, typer.Argument(help="The YAML config the gateway served.", show_default=False)
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the labelled set.")],
    since: Annotated[
        float | None, typer.Option(help="Only the last this many hours.", min=0)
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="Only requests to this system or model.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many requests.", min=1)] = None,
) -> None:
    """Write captured traffic (`gateway.capture`) as a labelled set, answers as labels.

    Each request's messages become an item, and the answer the gateway gave then its label.
    """

    def run() -> None:
        loaded = load_config(config)
        spec = loaded.config.gateway
        after = time.time() - since * 3600 if since is not None else None
        shared = shared_request_log(spec)
        if shared is not None:  # every replica's traffic, from PostgreSQL
            path: Path | str = "the shared request log"

            async def fetch() -> list[dict[str, Any]]:
                try:
                    rows = await shared.traffic(since=after, target=target, limit=limit)
                finally:
                    await shared.aclose()
                return exchange_dicts(rows)

            exchanges = asyncio.run(fetch())
        else:
            if spec.request_log is None:
                fail(f"{config} keeps no request log (gateway.request_log), so no traffic")
            path = loaded.local_path(spec.request_log)
            if not path.exists():
                fail(f"no request log at {path}: has the gateway served this config?")
            try:
                exchanges = read_traffic(path, since=after, target=target, limit=limit)
            except ValueError as exc:
                fail(str(exc))
        if not exchanges:
            hint = "" if spec.capture else " (gateway.capture is off in this config)"
            fail(f"no captured traffic in {path} for that selection{hint}")
        count = write_jsonl(out, traffic_rows(exchanges))
        console.print(
            f"wrote {out}: {count} requests with the answers given then as labels; replay them "
            f"with `modelyard eval OTHER.yaml SYSTEM --data {out}` (or compare, gate)"
        )

    guarded(run)
