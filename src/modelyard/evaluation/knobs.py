"""Tunable knobs of a system: a place in the config file plus the values worth trying.

A knob is written `systems.main.stages[0].threshold=0.5,0.6,0.7` (a list) or
`...=0.1:0.9:0.1` (start:stop:step, inclusive). The list is read as a YAML flow list, so a value
that is itself a list goes in brackets (`systems.main.chain=[a,b],[b,a]`) and a string holding
a comma in quotes. Pattern specs may declare their knobs with a
`tunable` class attribute mapping field names to default candidate values; without it, fields
named like a threshold, a cost weight (λ) or a quorum are found by name.

Calibrated values are written back into the YAML *text*, so comments, order and every other
setting stay exactly as they were.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

from modelyard.config.loader import LoadedConfig, Loc, dotted
from modelyard.config.node_base import NodeBase
from modelyard.errors import ConfigError

_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(21))
_WEIGHTS = (
    0.0,
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.0,
)
"""λ of a cost-aware router, in accuracy given up per unit of relative cost."""
BY_NAME: dict[str, tuple[Any, ...]] = {
    "threshold": _THRESHOLDS,
    "min_confidence": _THRESHOLDS,
    "min_score": _THRESHOLDS,
    "min_agreement": _THRESHOLDS,
    "agreement": _THRESHOLDS,
    "cost_weight": _WEIGHTS,
    "lambda": _WEIGHTS,
    "lambda_": _WEIGHTS,
    "willingness_to_pay": _WEIGHTS,
}
"""Default candidates for knob fields found by name."""
_QUORUM = ("quorum", "min_votes")


@dataclass(frozen=True, slots=True)
class Knob:
    """A place in the config and the candidate values to try there."""

    path: Loc
    values: tuple[Any, ...]

    @property
    def name(self) -> str:
        """The knob's dotted path, e.g. `systems.main.threshold`."""
        return dotted(self.path)


_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_path(text: str) -> Loc:
    """`systems.main.stages[0].threshold` as a location tuple."""
    parts: list[str | int] = []
    position = 0
    for match in _PART.finditer(text):
        if text[position : match.start()] not in ("", "."):
            raise ConfigError(f"invalid knob path {text!r}")
        parts.append(int(match.group(2)) if match.group(2) else match.group(1))
        position = match.end()
    if not parts or position != len(text):
        raise ConfigError(f"invalid knob path {text!r}")
    return tuple(parts)


def _values(text: str) -> tuple[Any, ...]:
    if text.count(":") == 2 and "," not in text:
        try:
            start, stop, step = (float(v) for v in text.split(":"))
        except ValueError:
            raise ConfigError(
                f"invalid range {text!r}; start, stop and step must be numbers (a single value "
                "holding two colons is a list of one: end it with a comma)"
            ) from None
        if step <= 0 or stop < start:
            raise ConfigError(f"invalid range {text!r}; write start:stop:step with step > 0")
        count = math.floor((stop - start) / step + 1e-9) + 1
        return tuple(round(start + i * step, 10) for i in range(count))
    try:  # a YAML flow list, so a value may itself be a list or hold a quoted comma
        values = yaml.safe_load(f"[{text}]")
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "not YAML"
        raise ConfigError(
            f"cannot read the values {text!r}: {problem}; write v1,v2 with lists in brackets "
            "([a, b],[b, a]) and commas inside a value quoted"
        ) from None
    if not isinstance(values, list) or not values:
        raise ConfigError(f"no candidate values in {text!r}")
    return tuple(values)


def parse_knob(text: str) -> Knob:
    """A knob from `path=v1,v2,...` or `path=start:stop:step`."""
    path, sep, values = text.partition("=")
    if not sep:
        raise ConfigError(f"a knob is PATH=VALUES, got {text!r}")
    return Knob(parse_path(path.strip()), _values(values))


def spec_knobs(spec: BaseModel, loc: Loc) -> Iterator[Knob]:
    """The knobs of one spec at `loc`: its declared `tunable` fields, else found by name.
    A field left unset (None) is not a knob: it is not in use there."""
    declared: Mapping[str, Sequence[Any]] | None = getattr(type(spec), "tunable", None)
    for name, info in type(spec).model_fields.items():
        key = info.alias or name
        if getattr(spec, name) is None:
            continue
        if declared is not None:
            if name in declared:
                yield Knob((*loc, key), tuple(declared[name]))
            continue
        if key in BY_NAME or name in BY_NAME:
            yield Knob((*loc, key), BY_NAME.get(key) or BY_NAME[name])
        elif key in _QUORUM:
            members = _member_count(spec)
            if members > 1:
                yield Knob((*loc, key), tuple(range(1, members + 1)))


def _member_count(spec: BaseModel) -> int:
    if isinstance(spec, NodeBase):
        try:
            return sum(1 for _ in spec.child_nodes())
        except NotImplementedError:
            return 0
    return 0


def discover_knobs(loaded: LoadedConfig, system: str) -> list[Knob]:
    """Every tunable field in `system`, the specs inside it (cascade stages, routing
    policies) and the systems it names, with default candidates."""
    systems = loaded.config.systems
    if system not in systems:
        return []
    found: list[Knob] = []
    seen = {system}

    def follow(spec: NodeBase) -> None:
        try:
            children = list(spec.child_nodes())
        except NotImplementedError:
            return
        for child, _ in children:
            if isinstance(child, str) and child in systems and child not in seen:
                seen.add(child)
                walk(systems[child], ("systems", child))

    def walk(value: Any, loc: Loc) -> None:
        if isinstance(value, BaseModel):
            found.extend(spec_knobs(value, loc))
            for name, info in type(value).model_fields.items():
                walk(getattr(value, name), (*loc, info.alias or name))
            if isinstance(value, NodeBase):
                follow(value)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, (*loc, i))
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*loc, str(key)))

    walk(systems[system], ("systems", system))
    return found


def format_value(value: Any) -> str:
    """A value as YAML flow text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 10))
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip()
    return text.removesuffix("...").strip()


def _child(node: yaml.Node, part: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode) and isinstance(part, str):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == part:
                found: yaml.Node = value
                return found
        return None
    if isinstance(node, yaml.SequenceNode) and isinstance(part, str) and part.isdigit():
        part = int(part)  # `stages.0` means `stages[0]`
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int):
        item: yaml.Node | None = node.value[part] if part < len(node.value) else None
        return item
    return None


def _content_end(text: str, node: yaml.Node) -> int:
    """Where the text of `node` ends. A block collection's end mark is where the next token
    starts, on the line of whatever follows it (the next stage, the next system), so follow
    its last entry down to a scalar or a flow collection."""
    while isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.value:
        if node.flow_style:
            break
        last = node.value[-1]
        node = last[1] if isinstance(node, yaml.MappingNode) else last
    return len(text[: node.end_mark.index].rstrip())


def _insert(text: str, mapping: yaml.MappingNode, key: str, value: str) -> str:
    if mapping.flow_style:
        close = mapping.end_mark.index - 1
        sep = ", " if mapping.value else ""
        return text[:close] + f"{sep}{key}: {value}" + text[close:]
    first_key = mapping.value[0][0]
    indent = " " * first_key.start_mark.column
    newline = text.find("\n", _content_end(text, mapping.value[-1][1]))
    if newline == -1:
        text += "\n"
        newline = len(text) - 1
    end = newline + 1
    return text[:end] + f"{indent}{key}: {value}\n" + text[end:]


def set_value(text: str, path: Loc, value: Any) -> str:
    """`text` with the YAML value at `path` replaced by `value` (or the key added)."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is None:
        raise ConfigError("the config is empty")
    node: yaml.Node = root
    for depth, part in enumerate(path[:-1]):
        child = _child(node, part)
        if child is None:
            raise ConfigError(f"cannot set {dotted(path)}: {dotted(path[: depth + 1])} not found")
        node = child
    last = path[-1]
    target = _child(node, last)
    formatted = format_value(value)
    if target is not None:
        if not isinstance(target, yaml.ScalarNode) and not isinstance(value, list | dict):
            raise ConfigError(f"cannot set {dotted(path)}: it holds a mapping or a list")
        return text[: target.start_mark.index] + formatted + text[target.end_mark.index :]
    if not isinstance(node, yaml.MappingNode) or not isinstance(last, str):
        raise ConfigError(f"cannot set {dotted(path)}: its parent is not a mapping")
    if not node.value and not node.flow_style:
        raise ConfigError(f"cannot set {dotted(path)}: its parent mapping is empty")
    return _insert(text, node, last, formatted)


def apply_values(text: str, assignment: Mapping[Loc, Any]) -> str:
    """`text` with every knob in `assignment` set."""
    for path, value in assignment.items():
        text = set_value(text, path, value)
    return text
