"""Config for running systems in production: state, budgets, caching, alerts, the gateway.

`Config` inherits these sections, so operational settings sit at the top level of the file.
"""

from __future__ import annotations

from pydantic import Field

from modelyard.config.base import Spec
from modelyard.config.gateway import GatewaySpec


class OperationsSpec(Spec):
    """The operational sections of a config file."""

    gateway: GatewaySpec = Field(default_factory=GatewaySpec)
