"""A config's problems as a person reads them: where (`Loc`, shown `dotted` and found on a line
with `line_of`) and what, with pydantic's validation errors turned into one message a person can
act on (`config_error`): union-branch noise dropped, unknown keys with the likely one meant,
an unset `${VAR}` named instead of the type it failed.

The loader (`loader.py`) reads the YAML and re-exports `Loc` and `dotted`, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from modelyard.config.schema import Config
from modelyard.errors import ConfigError
from modelyard.suggest import did_you_mean

Loc = tuple[str | int, ...]
"""Where in a config: the keys and indexes from its top level."""


def line_of(lines: Mapping[Loc, int], loc: Loc) -> int | None:
    """The line of `loc`, or of its nearest ancestor that has one."""
    probe = tuple(loc)
    while probe:
        if probe in lines:
            return lines[probe]
        probe = probe[:-1]
    return lines.get((), None)


def dotted(loc: Loc) -> str:
    """`("systems", "a", "stages", 1)` as `systems.a.stages[1]`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def config_error(
    exc: ValidationError,
    path: str,
    lines: Mapping[Loc, int],
    data: Any,
    missing_env: Mapping[Loc, str],
) -> ConfigError:
    """The ConfigError for `exc`: every problem with its line (`lines`), first the earliest;
    `data` is what was validated, `missing_env` where an unset variable left a value out."""
    errors = exc.errors(include_input=False, include_url=False)
    located = [(_data_loc(error["loc"], data), error) for error in errors]
    # A node may be a name or a pattern: when the pattern branch has something to say,
    # "should be a valid string" from the name branch is noise.
    specific = {loc for loc, error in located if error["type"] != "string_type"}
    problems: list[tuple[int | None, str]] = []
    for loc, error in located:
        if error["type"] == "string_type" and any(s[: len(loc)] == loc for s in specific):
            continue
        if loc in missing_env:  # the real mistake: say which variable, not "not a number"
            text = f"{dotted(loc)}: environment variable {missing_env[loc]} is not set"
        else:
            text = _describe(error, loc, data)
        problems.append((line_of(lines, loc), text))
    problems.sort(key=lambda p: p[0] or 0)
    first_line, first = problems[0]
    more = "".join(
        f"\n  {path}:{line}: {text}" if line else f"\n  {path}: {text}"
        for line, text in problems[1:]
    )
    return ConfigError(first + more, path=path, line=first_line)


def _data_loc(loc: tuple[Any, ...], data: Any) -> Loc:
    """pydantic's error location mapped onto the data: the union-branch tags it inserts
    (`str`, a discriminator value such as `fake`) are dropped by walking the data alongside."""
    out: list[str | int] = []
    node = data
    for part in loc:
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        ):
            out.append(part)
            node = node[part]
        elif _is_branch_tag(part, node):
            continue
        else:
            out.append(part)
            node = None
    return tuple(out)


def _is_branch_tag(part: Any, node: Any) -> bool:
    """Whether `part` names a union branch pydantic tried, rather than a key in the file."""
    if not isinstance(part, str):
        return False
    if isinstance(node, dict) and (part == node.get("type") or part[:1].isupper()):
        return True
    return part in ("str", "int", "float", "bool") or part.startswith(
        ("tagged-union[", "function-", "list[", "dict[", "literal[")
    )


def _describe(error: Any, loc: Loc, data: Any) -> str:
    kind = error["type"]
    where = dotted(loc)
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = sorted(_allowed_keys(loc[:-1], data))
        hint = did_you_mean(key, allowed, listed="expected one of" if allowed else None)
        return f"{where}: unknown key {key!r}{hint}"
    if kind == "missing":
        return f"{where}: required field is missing"
    if kind == "union_tag_invalid":
        ctx = error.get("ctx", {})
        expected, tag = ctx.get("expected_tags", ""), str(ctx.get("tag", ""))
        types = [t.strip().strip("'") for t in str(expected).split(",") if t.strip()]
        return f"{where}: unknown type {tag!r}{did_you_mean(tag, types, listed='expected one of')}"
    if kind == "union_tag_not_found":
        return f"{where}: needs a 'type' key (or a model or system name)"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"{where}: expected a mapping of settings"
    message = str(error["msg"]).replace("Value error, ", "")
    return f"{where}: {message}"


def _allowed_keys(loc: Loc, data: Any) -> list[str]:
    """The keys the schema accepts at `loc`, found by walking the pydantic models."""
    model: Any = Config
    node: Any = data
    for part in loc:
        if isinstance(node, dict | list):
            try:
                node = node[part]  # type: ignore[index]
            except (KeyError, IndexError, TypeError):
                node = None
        model = _field_model(model, part, node)
        if model is None:
            return []
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or name for name, f in model.model_fields.items()]
    return []


def _field_model(model: Any, part: str | int, node: Any) -> Any:
    import typing

    if model is None:
        return None
    if isinstance(model, type) and issubclass(model, BaseModel):
        if isinstance(part, int) or part not in model.model_fields:
            return None
        return _unwrap(model.model_fields[part].annotation, node)
    origin = typing.get_origin(model)
    args = typing.get_args(model)
    if origin in (list, tuple) and args:
        return _unwrap(args[0], node)
    if origin in (dict, Mapping) and len(args) == 2:
        return _unwrap(args[1], node)
    return None


def _unwrap(annotation: Any, node: Any) -> Any:
    """The one model in an annotation that fits `node` (by its `type` tag when a union)."""
    import typing

    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0], node)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        candidates = [a for a in typing.get_args(annotation) if a is not type(None)]
        models = [a for a in candidates if isinstance(a, type) and issubclass(a, BaseModel)]
        tag = node.get("type") if isinstance(node, dict) else None
        for candidate in models:
            field_info = candidate.model_fields.get("type")
            if field_info is not None and tag in typing.get_args(field_info.annotation):
                return candidate
        if len(models) == 1:
            return models[0]
        for candidate in candidates:
            unwrapped = _unwrap(candidate, node)
            if unwrapped is None:
                continue
            if typing.get_origin(unwrapped) is not None or (
                isinstance(unwrapped, type) and issubclass(unwrapped, BaseModel)
            ):
                return unwrapped
        return None
    return annotation
