"""What in a resolved config decides a node's answers: the version the response cache keys each
system's and model's answers on (`cost.cache_keys.identity`).

A node's version is a digest of the resolved spec (after `${VAR}` substitution, validated) of
every system, model, embedder and provider the node can reach. A variable that feeds a base URL,
a prompt, a threshold or a route changes it; an edit anywhere else (a comment, budgets, alerts,
tracing, the gateway, the cache's own settings, a system the node does not reach) does not.
`RULES` says, field by field, what is left out or read differently:

- `out`: how long to wait, how often to retry, how many connections or threads. They decide
  whether an answer arrives, not what it says (the request's own deadline is not in the key
  either).
- `hidden`: values that often carry a credential (a provider's headers and query). Only whether
  each one is set counts, as for every `SecretStr` (API keys): an unset variable disables an
  optional provider, which changes who answers, while a rotated key keeps the cache, and no
  secret is ever hashed into a key kept in a shared store.
- `file`: a data file the build reads whole (examples, knowledge base, trained artifact, JSON
  Schema, a factory's files) counts by its content's sha256, so an edited FAQ misses.
- a section name: a reference to an entry of that section, whose spec is part of the version.

Not covered: what a node runs but the config only names — GGUF weights and recordings (by path),
Python functions (by `module:function`), packaged models (MiniLM, fastText) and modelyard
itself. After changing one of those in place, run `modelyard cache clear`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, SecretStr

from modelyard.config.balance_nodes import BalanceSpec
from modelyard.config.cascade_nodes import CascadeSpec, CascadeStageSpec, LearnedEstimatorSpec
from modelyard.config.loader import MISSING_ENV, LoadedConfig
from modelyard.config.local import (
    CallableSpec,
    ClassifierSpec,
    FakeSpec,
    LlamaCppSpec,
    MiniLMSpec,
    ReplySpec,
    RetrieverSpec,
)
from modelyard.config.node_base import NodeBase
from modelyard.config.nodes import EnsembleSpec, FallbackSpec, JsonSchemaGateSpec
from modelyard.config.references import node_refs
from modelyard.config.replay import ReplaySpec
from modelyard.config.router_nodes import LearnedRoutingSpec, SemanticRoutingSpec
from modelyard.config.schema import EmbedderSpec, ModelSpec, ProviderSpec

Section = Literal["systems", "models", "embedders", "providers"]
Reading = Literal["hidden", "file"] | Section
Rule = Literal["out"] | Reading
Todo = list[tuple[Section, str]]

_WAITING: Mapping[str, Rule] = {
    "timeouts": "out",
    "retry": "out",
    "breaker": "out",
    "limits": "out",
}

RULES: Mapping[type[BaseModel], Mapping[str, Rule]] = {
    ProviderSpec: {
        **_WAITING,
        "max_connections": "out",
        "optional": "out",  # what it changes (the provider disabled) shows as an unset secret
        "headers": "hidden",
        "query": "hidden",
    },
    ModelSpec: {**_WAITING, "provider": "providers", "fallbacks": "models"},
    EmbedderSpec: {"timeouts": "out", "provider": "providers"},
    NodeBase: {"deadline": "out"},
    FallbackSpec: {"member_share": "out"},
    BalanceSpec: {"member_share": "out", "cooldown": "out"},
    EnsembleSpec: {"member_deadline": "out", "deadlines": "out"},
    CascadeSpec: {"stage_share": "out"},
    CascadeStageSpec: {"expected_latency": "out"},
    LlamaCppSpec: {"threads": "out"},
    MiniLMSpec: {"threads": "out", "batch_size": "out", "cache_size": "out"},
    FakeSpec: {"latency": "out"},
    ReplySpec: {"latency": "out"},
    ReplaySpec: {"latency": "out"},
    ClassifierSpec: {"embedder": "embedders", "examples_file": "file"},
    RetrieverSpec: {"embedder": "embedders", "knowledge_base": "file"},
    SemanticRoutingSpec: {"embedder": "embedders"},
    LearnedRoutingSpec: {"embedder": "embedders", "artifact": "file"},
    LearnedEstimatorSpec: {"embedder": "embedders", "artifact": "file"},
    JsonSchemaGateSpec: {"schema_file": "file"},
    CallableSpec: {"files": "file"},
}
"""The fields read otherwise than as they are (see the module docstring); every other field of a
reachable spec is in the version as it is."""


@cache
def rules(spec_type: type[BaseModel]) -> Mapping[str, Rule]:
    """The rules of `spec_type`'s fields, its base classes' included."""
    merged: dict[str, Rule] = {}
    for base in reversed(spec_type.__mro__):
        merged.update(RULES.get(base, {}))
    return merged


def _presence(value: str | None) -> str | None:
    """What a hidden value shows: whether it is set (an unset `${VAR}` counts as unset)."""
    if value is None:
        return None
    return "unset" if MISSING_ENV in value else "set"


class AnswerVersions:
    """The answering version of each system and model of one loaded config."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        self._files: dict[Path, str | None] = {}

    def version(self, name: str, section: Section | None = None) -> str:
        """The sha256 of `material(name, section)`."""
        material = orjson.dumps(self.material(name, section), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(material).hexdigest()

    def material(self, name: str, section: Section | None = None) -> dict[str, dict[str, Any]]:
        """What decides the answers of `name` (a system, else a model, unless `section` says):
        the form of each spec it reaches, by section and name."""
        config = self.loaded.config
        start = section or ("systems" if name in config.systems else "models")
        found: dict[str, dict[str, Any]] = {}
        todo: Todo = [(start, name)]
        while todo:
            where, ref = todo.pop()
            if ref in found.setdefault(where, {}):
                continue
            spec = getattr(config, where).get(ref)
            # A system may be another name (`main: gpt`): what that name reaches is followed.
            plain = spec is None or isinstance(spec, str)
            found[where][ref] = spec if plain else self._form(spec, todo)
            if where == "systems" and spec is not None:
                todo += [
                    ("systems" if r in config.systems else "models", r)
                    for r, _ in node_refs(spec, ())
                ]
        return found

    def _form(self, spec: BaseModel, todo: Todo) -> dict[str, Any]:
        form: dict[str, Any] = {}
        spec_rules = rules(type(spec))
        for field in type(spec).model_fields:
            rule = spec_rules.get(field)
            if rule != "out":
                form[field] = self._value(getattr(spec, field), rule, todo)
        return form

    def _value(self, value: Any, rule: Reading | None, todo: Todo) -> Any:
        if value is None:
            return None
        if rule == "hidden":
            return {key: _presence(item) for key, item in value.items()}
        if rule == "file":
            if isinstance(value, Mapping):
                return {key: self._file(item) for key, item in value.items()}
            return self._file(value)
        if rule is not None:  # a reference: the entry it names is part of the version too
            todo += [(rule, ref) for ref in ([value] if isinstance(value, str) else value)]
        if isinstance(value, SecretStr):
            return _presence(value.get_secret_value())
        if isinstance(value, BaseModel):
            return self._form(value, todo)
        if isinstance(value, Mapping):
            return {str(key): self._value(item, None, todo) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self._value(item, None, todo) for item in value]
        return value

    def _file(self, value: str) -> tuple[str, str | None]:
        """A data file as the path written and its content's sha256 (None if unreadable)."""
        path = self.loaded.local_path(value)
        if path not in self._files:
            try:
                with path.open("rb") as file:
                    self._files[path] = hashlib.file_digest(file, "sha256").hexdigest()
            except OSError:
                self._files[path] = None
        return value, self._files[path]
