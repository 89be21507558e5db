"""Reading a config file: YAML with line numbers, `${ENV}` substitution, validation with errors a
person can act on (file, line, field, what was expected), and never a secret echoed back.

How a validation error becomes that message, and `Loc` (where in a config), are in
`problems.py`; `Loc` and `dotted` are importable from here as before.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modelyard.config.problems import Loc as Loc
from modelyard.config.problems import config_error, line_of
from modelyard.config.problems import dotted as dotted
from modelyard.config.schema import Config
from modelyard.errors import ConfigError

log = logging.getLogger("modelyard.config")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_BROKEN_ENV = re.compile(r"\$\{[A-Za-z0-9_]*")
"""The start of a `${` that `_ENV` did not read: only its name-like part is shown, since the
rest may be a secret put in braces."""
MISSING_ENV = "\x00missing-env\x00"
"""What an unset `${VAR}` becomes; build decides whether that disables a provider or is fatal."""

EXTENSION_PREFIX = "x-"
"""Top-level keys starting with this are ignored (as in Docker Compose): shared settings to
anchor and merge."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedConfig:
    """A validated config and where each part of it came from."""

    config: Config
    path: Path
    text: str
    version: str
    """A short hash of the file's text: which config a decision was made under."""
    lines: Mapping[Loc, int] = field(default_factory=dict)
    missing_env: Mapping[Loc, str] = field(default_factory=dict)
    """Where an unset `${VAR}` was used, and the variable's name."""
    from_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Each value `${VAR}` put in the config, and its variable: errors name the variable."""
    env_defaults: Mapping[Loc, str] = field(default_factory=dict)
    """Where a `${VAR:-default}` took its default (the variable unset), and the variable."""

    @property
    def base_dir(self) -> Path:
        """The directory relative paths in the config are resolved against."""
        return self.path.parent

    def local_path(self, value: str) -> Path:
        """A path written in the config: `~` expanded, relative to the config's directory."""
        return config_relative(value, self.base_dir)

    def line(self, loc: Loc) -> int | None:
        """The line of the closest enclosing element of `loc` that has one."""
        return line_of(self.lines, loc)

    def error(self, loc: Loc, message: str) -> ConfigError:
        """A ConfigError pointing at `loc` (e.g. `("systems", "support", "stages", 1)`)."""
        text = hide_env_values(f"{dotted(loc)}: {message}", self.from_env)
        return ConfigError(text, path=str(self.path), line=self.line(loc))


def hide_env_values(text: str, from_env: Mapping[str, str]) -> str:
    """`text` with each value that came from `${VAR}` shown as `${VAR}`: an error must not echo
    a secret, and the variable is what the reader has to fix."""
    for value in sorted(from_env, key=len, reverse=True):
        if len(value) >= 4:
            text = text.replace(value, "${" + from_env[value] + "}")
    return text


def config_relative(value: str, base_dir: Path) -> Path:
    """`value` as a path: `~` expanded, and relative to `base_dir` unless absolute."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (a silent overwrite hides typos)."""


_MERGE = "tag:yaml.org,2002:merge"
"""The tag of a `<<: *anchor` key: the anchored mapping's keys, unless given here."""
_COLLECTIONS: dict[type[yaml.Node], str] = {
    yaml.MappingNode: "tag:yaml.org,2002:map",
    yaml.SequenceNode: "tag:yaml.org,2002:seq",
}
"""The one tag a mapping or a sequence may carry: any other (`!include`, `!!python/object`,
`!!set`) would be read as plain data and its meaning lost."""


_INDENTATION_PROBLEMS = ("mapping values are not allowed here", "expected <block end>")
"""PyYAML's words for a line indented out of place, which do not say so."""


def _compose(text: str, path: str) -> yaml.Node | None:
    try:
        node: yaml.Node | None = yaml.compose(text, Loader=_LineLoader)
        return node
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        if mark is not None and text[mark.index - 1 : mark.index + 1] == "${":
            # In `{...}` and `[...]` YAML reads the `{` of `${VAR}` as a nested mapping.
            problem += '; quote a ${VAR} written inside {...} or [...]: "${VAR}"'
        elif problem.startswith(_INDENTATION_PROBLEMS):
            problem += "; check this line's indentation against the lines above it"
            if problem.startswith("mapping values"):
                problem += ", or quote a value that holds ': '"
        raise ConfigError(f"invalid YAML: {problem}", path=path, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", path=path) from None


class _Builder:
    """Turns a YAML node tree into plain data, noting each element's line and unset variables."""

    def __init__(self, path: str, env: Mapping[str, str]) -> None:
        self.path = path
        self.env = env
        self.lines: dict[Loc, int] = {}
        self.missing: dict[Loc, str] = {}
        self.defaulted: dict[Loc, str] = {}
        self.from_env: dict[str, str] = {}
        self._constructor = _LineLoader("")

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.lines[loc] = node.start_mark.line + 1
        expected = _COLLECTIONS.get(type(node))
        if expected is not None and node.tag != expected:
            raise ConfigError(
                f"invalid YAML: unsupported tag {node.tag!r}",
                path=self.path,
                line=node.start_mark.line + 1,
            )
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            merged: list[yaml.Node] = []
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE:
                    merged.append(value_node)
                    continue
                key = self._scalar(key_node)
                if isinstance(key, bool):
                    # YAML 1.1 reads yes/no/on/off/true/false as booleans, even as keys.
                    raise ConfigError(
                        f"{dotted(loc)}: the key {key_node.value!r} reads as the boolean {key};"
                        f' quote it ("{key_node.value}") to use it as a name',
                        path=self.path,
                        line=key_node.start_mark.line + 1,
                    )
                if not isinstance(key, str):
                    key = str(key)
                if key in out:
                    raise ConfigError(
                        f"{dotted((*loc, key))}: key {key!r} appears twice",
                        path=self.path,
                        line=key_node.start_mark.line + 1,
                    )
                out[key] = self.build(value_node, (*loc, key))
                self.lines[(*loc, key)] = key_node.start_mark.line + 1
            for source in merged:
                self._merge(out, source, loc)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*loc, i)) for i, item in enumerate(node.value)]
        value = self._scalar(node)
        if isinstance(value, str) and "${" in value:
            return self._substitute(value, loc)
        return value

    def _merge(self, out: dict[str, Any], source: yaml.Node, loc: Loc) -> None:
        """`<<: *a` or `<<: [*a, *b]`: keys not given here come from the anchored mappings,
        the first listed winning (YAML's merge-key rule)."""
        sources = source.value if isinstance(source, yaml.SequenceNode) else [source]
        for mapping in sources:
            if not isinstance(mapping, yaml.MappingNode):
                raise ConfigError(
                    f"{dotted(loc)}: '<<' merges a mapping (an &anchor of one), not this",
                    path=self.path,
                    line=mapping.start_mark.line + 1,
                )
            # Built apart, so only the keys taken bring their lines and unset variables: a
            # key given here hides the anchor's (and its `${VAR}`), and the merging mapping
            # keeps its own line.
            scratch = _Builder(self.path, self.env)
            for key, value in scratch.build(mapping, ()).items():
                if key in out:
                    continue
                out[key] = value
                for where, line in scratch.lines.items():
                    if where[:1] == (key,):
                        self.lines.setdefault((*loc, *where), line)
                for where, variable in scratch.missing.items():
                    if where[:1] == (key,):
                        self.missing.setdefault((*loc, *where), variable)
                for where, variable in scratch.defaulted.items():
                    if where[:1] == (key,):
                        self.defaulted.setdefault((*loc, *where), variable)
            self.from_env.update(scratch.from_env)

    def _scalar(self, node: yaml.Node) -> Any:
        try:
            return self._constructor.construct_object(  # type: ignore[no-untyped-call]
                node, deep=True
            )
        except yaml.YAMLError as exc:
            # Tags other than YAML's own (`!custom`, `!!python/...`) are refused, never run.
            raise ConfigError(
                f"invalid YAML: unsupported tag {node.tag!r}"
                if isinstance(exc, yaml.constructor.ConstructorError)
                else f"invalid YAML: {exc}",
                path=self.path,
                line=node.start_mark.line + 1,
            ) from None

    def _substitute(self, value: str, loc: Loc) -> str:
        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in self.env and self.env[name] != "":
                self.from_env[self.env[name]] = name
                return self.env[name]
            if default is not None:
                self.defaulted[loc] = name
                return default
            self.missing[loc] = name
            return MISSING_ENV

        # `$${` is a literal `${` (a prompt's template text), as in Docker Compose.
        pieces = value.split("$${")
        broken = next(
            (found for found in (_BROKEN_ENV.search(_ENV.sub("", p)) for p in pieces) if found),
            None,
        )
        if broken is not None:
            # `${KEY` or `${A-B}` would be used as written: sent as the key, say.
            raise ConfigError(
                f"{dotted(loc)}: '{broken.group(0)}' is not a whole ${{VAR}} reference, so it"
                " would be used as written; write ${VAR} (a name of letters, digits and _)"
                " or ${VAR:-default} (or $${ for a literal ${)",
                path=self.path,
                line=self.lines.get(loc),
            )
        return "${".join(_ENV.sub(replace, piece) for piece in pieces)


def text_version(text: str) -> str:
    """The version of a config text: the start of its sha256, as logs and history show it."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def parse(
    text: str, *, path: str = "<config>", env: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Validate config `text`; raise ConfigError naming every problem with its line."""
    builder = _Builder(path, os.environ if env is None else env)
    node = _compose(text, path)
    data = {} if node is None else builder.build(node, ())
    if not isinstance(data, dict):
        raise ConfigError("the config must be a mapping at the top level", path=path, line=1)
    # Top-level `x-` keys are the place for `&anchors` that `<<: *anchor` merges elsewhere.
    data = {k: v for k, v in data.items() if not k.startswith(EXTENSION_PREFIX)}
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        error = config_error(exc, path, builder.lines, data, builder.missing)
        message = hide_env_values(error.message, builder.from_env)
        raise ConfigError(message, path=path, line=error.line) from None
    if not (config.models or config.systems or config.embedders):
        # An empty or truncated file would otherwise be "valid" and, on reload, remove everything.
        raise ConfigError(
            "the config defines no models, systems or embedders (is the file empty?)",
            path=path,
            line=1,
        )
    version = text_version(text)
    return LoadedConfig(
        config=name_state_files(
            config, Path(path).name if path != "<config>" else "config", Path(path).parent
        ),
        path=Path(path),
        text=text,
        version=version,
        lines=builder.lines,
        # An unset variable under an `x-` key was only in an anchor no one took it from.
        missing_env={
            loc: name
            for loc, name in builder.missing.items()
            if not (loc and str(loc[0]).startswith(EXTENSION_PREFIX))
        },
        from_env=builder.from_env,
        env_defaults=builder.defaulted,
    )


CONFIG_NAME = "{config}"
"""In a state file's path, the config file's name: each config keeps its own keys, budgets,
ledger and request log, even when several share a folder (prod.yaml beside staging.yaml)."""


def name_state_files(config: Config, name: str, base_dir: Path) -> Config:
    """`config` with `{config}` in its state, cache, ledger, key and request-log paths replaced
    by `name`. A file kept where these lived before per-config folders (`.modelyard/keys...`
    beside the config) is used while the new one does not exist: an upgraded gateway keeps
    its keys (an empty key store would let anyone in) and its spend."""

    def named(value: str | None) -> str | None:
        if value is None or CONFIG_NAME not in value:
            return value
        path = value.replace(CONFIG_NAME, name)
        legacy = value.replace(CONFIG_NAME + "/", "")
        gone = not config_relative(path, base_dir).exists()
        if gone and config_relative(legacy, base_dir).exists():
            log.warning(
                "%s: using %s, kept from before per-config state folders; move it to %s",
                name,
                legacy,
                path,
            )
            return legacy
        return path

    gateway = config.gateway
    updates: dict[str, Any] = {
        "gateway": gateway.model_copy(
            update={"keys_db": named(gateway.keys_db), "request_log": named(gateway.request_log)}
        ),
        "state": config.state.model_copy(update={"path": named(config.state.path)}),
        "ledger": config.ledger.model_copy(update={"path": named(config.ledger.path)}),
    }
    if config.cache is not None:
        updates["cache"] = config.cache.model_copy(update={"path": named(config.cache.path)})
    return config.model_copy(update=updates)


def load_config(
    path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Read and validate the config file at `path`."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", path=str(file)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text (byte {exc.start}: {exc.object[exc.start : exc.start + 1]!r});"
            " save the file as UTF-8",
            path=str(file),
            line=exc.object[: exc.start].count(b"\n") + 1,
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", path=str(file)) from None
    return parse(text, path=str(file), env=env)
