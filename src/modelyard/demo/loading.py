"""Telling a person what a config's first load is doing: local models take seconds to load and
classifiers train on their examples, so the demo names each step as it starts and says how long
it took. It hooks `Resources.cached`, where every expensive local resource is made once."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.config.resources import Resources
from modelyard.config.schema import Config

Listener = Callable[[str, float | None], None]
"""Called with (what is loading, None) when a load starts and (what, seconds) when it ends."""

_KINDS = {
    "minilm": "MiniLM embedder (all-MiniLM-L6-v2 on onnxruntime)",
    "classifier": "{name}: embedding and fitting its labelled examples",
    "retriever": "{name}: embedding its knowledge base",
    "langdetect": "fastText language identification (lid.176)",
    "semantic": "semantic routes: embedding their example utterances",
}


def resource_name(key: str, names: Mapping[str, Sequence[str]] | None = None) -> str:
    """What a `Resources.cached` key loads, in words; `names` (local model type -> the
    config's models of that type) names the model when only one can be meant."""
    kind, _, rest = key.partition("|")
    if kind == "llama_cpp":
        return f"{Path(rest.split('|')[0]).stem} on llama.cpp"
    candidates = (names or {}).get(kind, ())
    what = {"classifier": "classifier", "retriever": "FAQ retriever"}.get(kind, kind)
    name = f"{candidates[0]} ({what})" if len(candidates) == 1 else f"a {what}"
    return _KINDS.get(kind, kind).format(name=name)


def local_models(config: Config) -> dict[str, list[str]]:
    """The config's local models by type (`classifier`, `retriever`, ...)."""
    out: dict[str, list[str]] = {}
    for name, spec in config.models.items():
        if spec.local is not None:
            out.setdefault(spec.local.type, []).append(name)
    return out


@dataclass
class ReportingResources(Resources):
    """Resources that tell `listener` when each expensive load starts and how long it took."""

    listener: Listener | None = None
    names: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """Local model types -> model names, to name what loads (see `local_models`)."""

    def cached(self, key: str, factory: Callable[[], Any]) -> Any:
        if key in self.loaded or self.listener is None:
            return super().cached(key, factory)
        what = resource_name(key, self.names)
        self.listener(what, None)
        started = time.perf_counter()
        value = super().cached(key, factory)
        self.listener(what, time.perf_counter() - started)
        return value
