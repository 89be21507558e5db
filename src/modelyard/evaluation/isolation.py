"""Evaluation runs a config's systems as they are, but off production's books.

`eval`, `compare`, `calibrate` and `gate` often run the production config itself. Their traffic
is not production's: it must not land in the spend ledger (`modelyard costs` would report it,
and replayed recordings would count as spend), charge budgets (a daily cap could stop the
evaluation, or the evaluation could spend what the gateway needs), fire alerts or webhooks
(a calibration's sweep looks like an anomaly by design), be answered from the response cache
(a candidate config would be scored on the baseline's cached answers), flood production's
traces with thousands of replayed calls, or count in production's circuit breakers, retry
budgets and rate limits when they are shared in Redis or PostgreSQL (a sweep against a failing
model would open its circuit for every gateway replica): its state is kept in memory.
"""

from __future__ import annotations

import dataclasses
import os

from modelyard.config.build import build
from modelyard.config.loader import LoadedConfig, load_config
from modelyard.config.operations import AlertsSpec, StateSpec
from modelyard.config.resources import Resources
from modelyard.yard import Yard


def for_evaluation(loaded: LoadedConfig) -> LoadedConfig:
    """`loaded` with the ledger, budgets, alerts, cache and traces off and its resilience state
    in memory; systems unchanged."""
    config = loaded.config.model_copy(
        update={
            "ledger": loaded.config.ledger.model_copy(update={"enabled": False}),
            "budgets": [],
            "alerts": AlertsSpec(log=False, webhook=None, anomaly=None),
            "cache": None,
            "tracing": None,
            "state": StateSpec(backend="memory"),
        }
    )
    return dataclasses.replace(loaded, config=config)


def load_for_evaluation(path: str | os.PathLike[str], resources: Resources | None = None) -> Yard:
    """Load and build the config at `path` as evaluation runs it."""
    return build_for_evaluation(load_config(path), resources)


def build_for_evaluation(loaded: LoadedConfig, resources: Resources | None = None) -> Yard:
    """Build a config already loaded as evaluation runs it (`loaded` itself is left as it is,
    so its caller still sees the budgets, say)."""
    resources = resources or Resources()
    return Yard(build(for_evaluation(loaded), resources), resources)
