"""The patterns, each a Model holding Models: router, pipeline, ensemble, cascade,
specialist-generalist and balance. Their policies (rules, normalisers, combiners, confidence
arithmetic, learned-router math, balancing strategies) live in modules of their own and do no
I/O."""

from modelyard.patterns.balance import BalanceModel
from modelyard.patterns.cascade import CascadeModel, Stage
from modelyard.patterns.ensemble import EnsembleModel
from modelyard.patterns.pipeline import PipelineModel, PipelineStage
from modelyard.patterns.router import RouterModel
from modelyard.patterns.specialist import SpecialistModel

__all__ = [
    "BalanceModel",
    "CascadeModel",
    "EnsembleModel",
    "PipelineModel",
    "PipelineStage",
    "RouterModel",
    "SpecialistModel",
    "Stage",
]
