"""Pipeline stage templates: `{input}`, `{previous}`, `{stages.<name>}`, and JSON fields of them
(`{previous.summary}`, `{stages.extract.items.0.id}`). Parsed once at build; rendering is string
joins, never `eval` or `str.format` on user text. `{{` and `}}` are literal braces."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from modelyard.patterns.normalise import lookup, parse_json_answer

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"^[A-Za-z_][\w-]*$")


class TemplateError(ValueError):
    """A template that cannot be parsed, or a field that a stage's output does not have."""


@dataclass(frozen=True, slots=True)
class Ref:
    """One placeholder: what it reads (`input`, `previous` or a stage's name) and a JSON path."""

    source: str
    stage: str | None
    path: tuple[str, ...]

    @property
    def text(self) -> str:
        """The placeholder as written."""
        head = self.source if self.stage is None else f"stages.{self.stage}"
        return "{" + ".".join((head, *self.path)) + "}"


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal strings and references, in order."""

    pieces: tuple[str | Ref, ...]

    @property
    def stages(self) -> tuple[str, ...]:
        """The stage names this template reads."""
        return tuple(p.stage for p in self.pieces if isinstance(p, Ref) and p.stage is not None)

    def size_bound(self, original: int, previous: int, outputs: Mapping[str, int]) -> int:
        """The most bytes `render` can return, given the most each source can hold (a JSON
        field of an output is no longer than the output)."""
        size = 0
        for piece in self.pieces:
            if isinstance(piece, str):
                size += len(piece.encode("utf-8"))
            elif piece.source == "input":
                size += original
            elif piece.source == "previous":
                size += previous
            else:
                assert piece.stage is not None
                size += outputs.get(piece.stage, 0)
        return size

    def render(self, original: str, previous: str, outputs: Mapping[str, str]) -> str:
        """The text for a stage: references replaced by the outputs they name."""
        out: list[str] = []
        for piece in self.pieces:
            if isinstance(piece, str):
                out.append(piece)
                continue
            if piece.source == "input":
                text = original
            elif piece.source == "previous":
                text = previous
            else:
                assert piece.stage is not None
                text = outputs[piece.stage]
            out.append(_field(text, piece) if piece.path else text)
        return "".join(out)


def _field(text: str, ref: Ref) -> str:
    try:
        value = lookup(parse_json_answer(text), ref.path)
    except ValueError:
        raise TemplateError(f"{ref.text}: the output is not JSON") from None
    except KeyError as missing:
        raise TemplateError(f"{ref.text}: the output has no field {missing.args[0]!r}") from None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def parse_template(text: str) -> Template:
    """Parse a template; TemplateError naming the bad placeholder."""
    pieces: list[str | Ref] = []
    literal: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        literal.append(text[position : match.start()])
        position = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            literal.append(token[0])
            continue
        if match.group(1) is None:
            raise TemplateError(
                f"unmatched {token!r} at character {match.start()}; "
                f"write {token * 2} for a literal brace"
            )
        if literal:
            pieces.append("".join(literal))
            literal = []
        pieces.append(_ref(match.group(1).strip()))
    literal.append(text[position:])
    if any(literal):
        pieces.append("".join(literal))
    return Template(tuple(pieces))


def _ref(body: str) -> Ref:
    parts = body.split(".")
    head = parts[0]
    if head in ("input", "previous"):
        return Ref(source=head, stage=None, path=_path(parts[1:], body))
    if head == "stages" and len(parts) >= 2 and _NAME.match(parts[1]):
        return Ref(source="stage", stage=parts[1], path=_path(parts[2:], body))
    raise TemplateError(
        f"unknown placeholder {{{body}}}; use {{input}}, {{previous}} or {{stages.<name>}}, "
        "optionally followed by a JSON field path such as .answer"
    )


def _path(parts: list[str], body: str) -> tuple[str, ...]:
    if any(not p for p in parts):
        raise TemplateError(f"empty field name in {{{body}}}")
    return tuple(parts)
