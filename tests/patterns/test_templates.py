"""Pipeline templates: placeholders, JSON fields, escapes and errors."""

from __future__ import annotations

import pytest

from modelyard.patterns.templates import TemplateError, parse_template


def test_render_reads_input_previous_and_named_stages() -> None:
    template = parse_template("Q: {input} | last: {previous} | first: {stages.extract}")
    text = template.render("why?", "because", {"extract": "facts"})
    assert text == "Q: why? | last: because | first: facts"
    assert template.stages == ("extract",)


def test_json_fields_of_an_output() -> None:
    template = parse_template("{previous.items.1.name} and {previous.count}")
    assert template.render("", '{"items": [{"name": "a"}, {"name": "b"}], "count": 2}', {}) == (
        "b and 2"
    )


def test_doubled_braces_are_literal() -> None:
    assert parse_template('{{"q": "{input}"}}').render("x", "", {}) == '{"q": "x"}'


def test_missing_field_names_the_placeholder() -> None:
    template = parse_template("{previous.answer}")
    with pytest.raises(TemplateError, match=r"\{previous.answer\}: the output has no field"):
        template.render("", '{"other": 1}', {})


@pytest.mark.parametrize("text", ["{inputs}", "{stages}", "{ input", "a } b", "{previous..x}"])
def test_bad_templates_are_refused(text: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(text)
