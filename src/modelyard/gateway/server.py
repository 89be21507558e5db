"""Running the gateway: uvicorn (uvloop + httptools) around the ASGI app; SIGHUP and file
changes reload the config; SIGTERM and SIGINT drain requests in flight before exiting."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

import uvicorn

from modelyard.errors import ConfigError
from modelyard.gateway.app import Gateway, create_app
from modelyard.observability.metrics import share_between_workers

log = logging.getLogger("modelyard.serve")

WORKER_START_TIMEOUT = 120
"""Seconds a worker of `serve --workers N` may take to build the config and serve: on SIGHUP,
uvicorn retires an old worker only once its replacement serves, and gives up the restart (the
old config serving on) after this long. Its default, 5 s, is less than local models take to
load (the quickstart builds in 8 s on 2 cores). uvicorn also waits this long for a running
worker's answer to its liveness ping, which a worker's own thread gives at once."""


WORKERS = "MODELYARD_WORKERS"
"""How many workers `serve` started, named in its environment for them (as $MODELYARD_CONFIG
names the file): with more than one, they keep rate windows and circuits in the shared state
store (`state.factory.live_store`)."""


def app_factory() -> Gateway:
    """uvicorn's factory, run in each worker: the config path comes from $MODELYARD_CONFIG, the
    number of workers from $MODELYARD_WORKERS."""
    # A worker of `--workers N` is a fresh interpreter: without this its reloads and notes
    # would come out bare, and its INFO lines not at all.
    configure_logging()
    workers = int(os.environ.get(WORKERS, "1"))
    try:
        gateway = create_app(serving=True, workers=workers)
    except ConfigError as exc:
        # A worker that SIGHUP restarted (`serve --workers N`) on a file that no longer loads:
        # uvicorn keeps the workers running. The reason, in one line, not a traceback.
        log.error("worker not started, the workers running keep serving: %s", exc)
        raise SystemExit(2) from None
    if workers > 1:  # after a SIGHUP, the one word that the new config serves
        live = gateway.live
        log.info(
            "worker %d serves %s (version %s)", os.getpid(), live.path.name, live.current.version
        )
    return gateway


def configure_logging() -> None:
    """The gateway's log lines: time, level, logger, message (once per process)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # watchfiles logs every change it sees at INFO; with the log written beside the config
    # (`serve cfg.yaml > serve.log`), each such line is a change in the watched folder, logged
    # in turn, forever. A reload logs what it did itself.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)


def serve(
    config: str | os.PathLike[str], *, host: str | None, port: int | None, workers: int | None
) -> None:
    """Serve `config` until interrupted."""
    path = Path(config).resolve()
    probe = create_app(path)  # fail on a bad config before binding a port
    current = probe.live.current
    spec = current.loaded.config.gateway
    systems, notes = sorted(current.systems), list(current.notes)
    warnings = list(current.built.warnings)  # what `check` warns of (an unpinned model id)
    asyncio.run(probe.live.aclose())
    processes = workers or spec.workers
    if processes > 1 and current.loaded.config.state.backend == "memory":
        raise ConfigError(
            f"{processes} workers with state.backend memory would each count budgets and rate "
            "limits alone (every cap multiplied by the workers); use sqlite (the default), "
            "redis or postgres",
            path=str(path),
        )
    os.environ["MODELYARD_CONFIG"] = str(path)
    os.environ[WORKERS] = str(processes)
    # Each scrape reaches one worker: it must show them all (docs/operations.md, "Metrics").
    shared = share_between_workers() if processes > 1 else None
    configure_logging()
    # Say where to call, once: uvicorn itself only logs warnings.
    log.info(
        "starting %s (version %s) on http://%s:%d/v1; systems: %s",
        path.name,
        current.version,
        host or spec.host,
        port or spec.port,
        ", ".join(systems) or "none",
    )
    for note in notes:
        log.info("note: %s", note)
    for warning in warnings:
        log.warning("%s", warning)
    try:
        uvicorn.run(
            "modelyard.gateway.server:app_factory",
            factory=True,
            host=host or spec.host,
            port=port or spec.port,
            workers=processes,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            log_level="warning",
            # Per-request work that a gateway behind its own load balancer does not need.
            proxy_headers=False,
            server_header=False,
            date_header=False,
            timeout_graceful_shutdown=int(spec.drain_timeout),
            timeout_worker_healthcheck=WORKER_START_TIMEOUT,
        )
    finally:
        if shared is not None:
            shutil.rmtree(shared, ignore_errors=True)
