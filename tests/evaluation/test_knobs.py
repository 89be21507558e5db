"""Knobs: parsing, discovery, and writing values back into the YAML text."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import pytest
import yaml
from pydantic import Field

from modelyard.config.loader import parse
from modelyard.config.node_base import NodeBase
from modelyard.config.nodes import NodeSpec
from modelyard.errors import ConfigError
from modelyard.evaluation.knobs import discover_knobs, parse_knob, parse_path, set_value, spec_knobs

TEXT = """# production config
models:
  a:
    local: {type: fake}   # the cheap one
  b:
    local:
      type: fake
      latency: 0.5  # seconds
systems:
  main: {type: fallback, chain: [a, b]}
"""


class _Cascade(NodeBase):
    type: Literal["cascade-test"]
    threshold: float = 0.5
    quorum: int = 1
    stages: list[str] = Field(default_factory=list)

    def child_nodes(self) -> Iterator[tuple[NodeSpec, tuple[str | int, ...]]]:
        for i, stage in enumerate(self.stages):
            yield stage, ("stages", i)


class _Declared(NodeBase):
    type: Literal["declared-test"]
    tunable: ClassVar[dict[str, tuple[Any, ...]]] = {"cost_weight": (0.1, 1.0)}
    cost_weight: float = 0.5
    threshold: float = 0.5


def test_replacing_a_value_keeps_comments_and_everything_else() -> None:
    out = set_value(TEXT, ("models", "b", "local", "latency"), 0.25)
    assert "latency: 0.25  # seconds" in out
    assert out.replace("0.25", "0.5") == TEXT


def test_adding_a_key_to_a_flow_mapping() -> None:
    out = set_value(TEXT, ("models", "a", "local", "latency"), 0.1)
    assert "local: {type: fake, latency: 0.1}   # the cheap one" in out
    assert parse(out).config.models["a"].local.latency == 0.1  # type: ignore[union-attr]


def test_adding_a_key_to_a_block_mapping() -> None:
    out = set_value(TEXT, ("models", "b", "local", "default"), "hello there")
    assert "      latency: 0.5  # seconds\n      default: hello there\n" in out
    assert parse(out).config.models["b"].local.default == "hello there"  # type: ignore[union-attr]


NESTED = """systems:
  main:
    type: ensemble
    members:
      - a
      - b
  other:
    type: cascade
    stages:
      - model: yi
        estimator:
          type: agreement
          models: [c]  # the checker
      # the strong one
      - model: gpt4
        note: |
          kept as written
      - model: last
"""


@pytest.mark.parametrize(
    ("path", "where"),
    [
        (("systems", "main", "quorum"), ("systems", "main")),
        (("systems", "other", "stages", 0, "threshold"), ("systems", "other", "stages", 0)),
        (("systems", "other", "stages", 1, "threshold"), ("systems", "other", "stages", 1)),
    ],
)
def test_a_key_added_after_a_nested_block_lands_in_its_own_mapping(
    path: tuple[str | int, ...], where: tuple[str | int, ...]
) -> None:
    # A block collection's end is where the next token starts, on the line of whatever follows
    # it: the key went into the next system or the next stage, so calibrating a stage's
    # threshold (or a vote's quorum) set the wrong one.
    out = yaml.safe_load(set_value(NESTED, path, 7))
    node: Any = out
    for part in where:
        node = node[part]
    assert node[path[-1]] == 7
    before = yaml.safe_load(NESTED)
    node = out
    for part in where:
        node = node[part]
    node.pop(path[-1])
    assert out == before


def test_a_dotted_number_indexes_a_list_like_brackets() -> None:
    dotted = set_value(TEXT, parse_path("systems.main.chain.1"), "c")
    assert dotted == set_value(TEXT, parse_path("systems.main.chain[1]"), "c")
    assert "chain: [a, c]" in dotted


def test_setting_under_a_missing_parent_is_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        set_value(TEXT, ("systems", "nope", "threshold"), 0.5)
    assert "systems.nope not found" in str(caught.value)


def test_knob_values_as_lists_and_ranges() -> None:
    assert parse_knob("systems.main.threshold=0.1:0.3:0.1").values == (0.1, 0.2, 0.3)
    knob = parse_knob("models.a.local.model=gpt-4,mixtral")
    assert knob.path == ("models", "a", "local", "model") and knob.values == ("gpt-4", "mixtral")
    assert parse_path("systems.main.stages[1].threshold") == (
        "systems",
        "main",
        "stages",
        1,
        "threshold",
    )
    with pytest.raises(ConfigError):
        parse_knob("systems.main.threshold")


def test_fields_are_found_by_name_with_quorum_up_to_the_member_count() -> None:
    spec = _Cascade(type="cascade-test", stages=["a", "b", "c"])
    knobs = {k.name: k.values for k in spec_knobs(spec, ("systems", "main"))}
    assert knobs["systems.main.threshold"][0] == 0.0 and knobs["systems.main.threshold"][-1] == 1.0
    assert knobs["systems.main.quorum"] == (1, 2, 3)


def test_a_declared_tunable_list_wins_over_names() -> None:
    spec = _Declared(type="declared-test")
    knobs = list(spec_knobs(spec, ("systems", "x")))
    assert [(k.name, k.values) for k in knobs] == [("systems.x.cost_weight", (0.1, 1.0))]


def test_a_fallback_system_has_no_knobs() -> None:
    assert discover_knobs(parse(TEXT), "main") == []


def test_a_range_of_non_numbers_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="invalid range 'a:b:c'; start, stop and step must be"):
        parse_knob("systems.main.stages.0.threshold=a:b:c")


def test_knob_values_may_be_lists_or_quoted_strings_holding_commas() -> None:
    chains = parse_knob("systems.main.chain=[mix,gpt4],[gpt4, mix]")
    assert chains.values == (["mix", "gpt4"], ["gpt4", "mix"])
    assert parse_knob('systems.main.note="a, b",c').values == ("a, b", "c")
    assert parse_knob("models.a.local.model=ollama:llama3:8b,").values == ("ollama:llama3:8b",)
    with pytest.raises(ConfigError, match="cannot read the values"):
        parse_knob("systems.main.chain=[mix,gpt4")
