"""Config for running systems in production: state, budgets, caching, alerts, the gateway.

`Config` inherits these sections, so operational settings sit at the top level of the file.
"""

from __future__ import annotations

from modelyard.config.base import Spec


class OperationsSpec(Spec):
    """The operational sections of a config file."""
