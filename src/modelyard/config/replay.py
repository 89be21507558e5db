"""Config for replay models: answer from recorded outcomes of a real model (evaluation/)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat

from modelyard.config.base import Spec

RecordingFormat = Literal[
    "routellm-gsm8k", "routellm-mmlu", "routellm-mtbench", "routerbench", "routerdc", "jsonl"
]


class ReplaySpec(Spec):
    """A model that answers with what `model` answered in recordings `data` of `format`.

    `data` is a path relative to the config file, or `shared:<path>` under the shared data root
    (`data_root`, else $MODELYARD_DATA, else the nearest `shared/data` above the source tree);
    a list merges several files or folders.
    """

    type: Literal["replay"]
    data: str | list[str] = Field(min_length=1)
    format: RecordingFormat
    model: str = Field(min_length=1)
    """The recorded model's name: a column or `model` value in the data."""
    data_root: str | None = None
    latency: NonNegativeFloat = 0.0
    """Seconds each answer takes, to rehearse deadlines; recordings are otherwise instant.
    With `recorded_latency`, only the answers recorded without a latency take it."""
    recorded_latency: PositiveFloat | None = None
    """Wait each answer's recorded latency (the JSONL `latency_ms`) times this scale before
    answering (1: as recorded; 0.1: ten times faster), so deadlines, cascades and the reports'
    latencies follow the recording. Recordings with no latency at all are refused."""
