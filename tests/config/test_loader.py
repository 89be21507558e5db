"""The config loader: line numbers, env substitution, errors that name the place and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelyard.config.build import build
from modelyard.config.loader import hide_env_values, load_config, parse
from modelyard.errors import ConfigError

HOSTED = """
providers:
  openai:
    type: openai
    api_key: ${OPENAI_API_KEY}
models:
  gpt:
    provider: openai
    id: gpt-4o-mini-2024-07-18
    price: {input: 0.15, output: 0.6}
"""


def error_of(text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        build(parse(text, path="cfg.yaml", env=env or {}))
    return caught.value


def test_typo_in_a_key_names_line_field_and_the_likely_fix() -> None:
    text = HOSTED.replace("    id: gpt", "    contxt_window: 5\n    id: gpt")
    error = error_of(text, {"OPENAI_API_KEY": "k"})
    assert error.line == 9
    assert "models.gpt.contxt_window" in str(error)
    assert "did you mean 'context_window'" in str(error)
    assert str(error).startswith("cfg.yaml:9:")


def test_unknown_provider_lists_the_defined_ones() -> None:
    error = error_of(HOSTED.replace("provider: openai", "provider: opnai"), {"OPENAI_API_KEY": "k"})
    assert error.line == 8
    assert "unknown provider 'opnai'" in str(error)
    assert "openai" in str(error)


def test_missing_env_var_names_the_variable_and_the_way_out() -> None:
    error = error_of(HOSTED)
    assert error.line == 5
    assert "OPENAI_API_KEY is not set" in str(error)
    assert "optional: true" in str(error)


def test_optional_provider_without_its_key_is_disabled_not_fatal() -> None:
    built = build(
        parse(HOSTED.replace("type: openai\n", "type: openai\n    optional: true\n"), env={})
    )
    assert "OPENAI_API_KEY" in built.disabled["gpt"]
    assert any("disabled" in note for note in built.notes)


def test_hosted_model_without_a_price_is_refused() -> None:
    error = error_of(
        HOSTED.replace("    price: {input: 0.15, output: 0.6}\n", ""), {"OPENAI_API_KEY": "k"}
    )
    assert "needs 'price'" in str(error)
    assert error.line == 7


def test_cycle_between_systems_is_refused_with_the_path() -> None:
    text = """
models:
  a: {local: {type: fake}}
systems:
  one: {type: fallback, chain: [a, two]}
  two: {type: fallback, chain: [one]}
"""
    error = error_of(text)
    assert "cycle" in str(error)
    assert "one -> two -> one" in str(error)


def test_unknown_member_of_a_system_is_named() -> None:
    error = error_of(
        "models:\n  a: {local: {type: fake}}\nsystems:\n  s: {type: fallback, chain: [a, b]}\n"
    )
    assert "unknown model or system 'b'" in str(error)
    assert error.line == 4


def test_an_embedder_named_where_a_model_goes_is_called_an_embedder() -> None:
    error = error_of(
        "models:\n  a: {local: {type: fake}}\n"
        "embedders:\n  e: {local: {type: hashing, dimensions: 8}}\n"
        "systems:\n  s: {type: specialist, classifier: e, generalist: a}\n"
    )
    message = str(error)
    assert "cfg.yaml:6: systems.s.classifier: 'e' is an embedder" in message
    assert "name a model or system here" in message
    assert "unknown" not in message


def test_a_model_named_where_an_embedder_goes_is_called_a_model() -> None:
    error = error_of(
        "models:\n  a: {local: {type: fake}}\n"
        "embedders:\n  e: {local: {type: hashing, dimensions: 8}}\n"
        "systems:\n  r:\n    type: router\n"
        "    semantic: {embedder: a, threshold: 0.3, examples: {x: [hi]}}\n"
        "    routes: {x: a}\n    default: x\n"
    )
    message = str(error)
    assert "systems.r.semantic.embedder: 'a' is a model, not an embedder" in message
    assert "defined embedders: e" in message and "unknown" not in message


PROMPTED = "models:\n  a: {local: {type: fake}}\n  b: {local: {type: fake}}\nsystems:\n  s: %s\n"


@pytest.mark.parametrize(
    ("node", "where", "message"),
    [
        (
            "{type: ensemble, members: [a, b], combine: judge, judge: a, "
            "prompt: 'Q: {question} C: {candidate}'}",
            "systems.s.prompt",
            "unknown placeholder {candidate}; did you mean 'candidates'?",
        ),
        (
            "{type: ensemble, members: [a, b], combine: fuse, fuser: a, prompt: 'Merge them'}",
            "systems.s.prompt",
            "the prompt has no {candidates}",
        ),
        (
            "{type: cascade, stages: [{model: a, threshold: 0.5, "
            "estimator: {type: verifier, model: b, prompt: 'Is {ouput} right?'}}, {model: b}]}",
            "systems.s.stages[0].estimator.prompt",
            "unknown placeholder {ouput}; did you mean 'output'",
        ),
        (
            "{type: pipeline, stages: [{model: a, "
            "gates: [{type: checker, model: b, prompt: 'Is {answer} fine?'}]}]}",
            "systems.s.stages[0].gates[0].prompt",
            "the prompt has no {output}",
        ),
    ],
)
def test_a_judges_or_checkers_prompt_that_would_hide_the_answers_is_refused(
    node: str, where: str, message: str
) -> None:
    """The slip was sent as written: the judge, fuser, verifier or checker read no answer."""
    error = str(error_of(PROMPTED % node))
    assert f"cfg.yaml:5: {where}: {message}" in error


def test_two_inline_nodes_of_one_system_with_one_name_are_refused() -> None:
    text = """
models:
  a: {local: {type: fake}}
systems:
  s:
    type: fallback
    chain:
      - {type: fallback, name: x, chain: [a]}
      - {type: fallback, name: x, chain: [a]}
"""
    error = error_of(text)
    assert "two nodes of system 's' are called 'x'" in str(error)
    assert "systems.s.chain[0]" in str(error)
    assert error.line == 9


def test_an_inline_node_named_as_a_model_is_refused() -> None:
    """Its records read "a ensemble -> a", the model a one of its members."""
    error = error_of(
        "models:\n  a: {local: {type: fake}}\n  b: {local: {type: fake}}\n"
        "systems:\n  s: {type: fallback, chain: [{type: ensemble, name: a, members: [a, b]}, b]}\n"
    )
    message = str(error)
    assert (
        "cfg.yaml:5: systems.s.chain[0].name: an inline node is called 'a', as a model is"
        in message
    )


def test_inline_nodes_of_different_systems_may_share_a_name() -> None:
    text = """
models:
  a: {local: {type: fake}}
systems:
  s: {type: fallback, chain: [{type: fallback, name: x, chain: [a]}]}
  t: {type: fallback, chain: [{type: fallback, name: x, chain: [a]}]}
"""
    assert set(build(parse(text, env={})).systems) == {"s", "t"}


def test_secret_never_echoed_in_errors() -> None:
    text = HOSTED.replace("${OPENAI_API_KEY}", "sk-supersecretvalue123456") + "    bogus: 1\n"
    error = error_of(text)
    assert "supersecret" not in str(error)


def test_duplicate_keys_are_refused() -> None:
    error = error_of("models:\n  a: {local: {type: fake}}\n  a: {local: {type: fake}}\n")
    assert "appears twice" in str(error)
    assert error.line == 3


def test_invalid_yaml_names_the_line() -> None:
    error = error_of("models:\n  a: [unclosed\n")
    assert "invalid YAML" in str(error)
    assert error.line is not None


@pytest.mark.parametrize(
    "value", ["{type: openai, api_key: ${KEY}}", "{type: openai, base_url: ${HOST}/v1}"]
)
def test_an_unquoted_variable_in_a_flow_mapping_says_to_quote_it(value: str) -> None:
    # YAML reads the `{` of `${KEY}` inside `{...}` as a nested mapping; its own message
    # ("expected ',' or '}', but got '{'") does not say that quoting is the fix.
    error = error_of(f"providers:\n  p: {value}\n")
    assert error.line == 2
    assert 'quote a ${VAR} written inside {...} or [...]: "${VAR}"' in str(error)


def test_env_default_is_used_when_unset() -> None:
    loaded = parse(
        "providers:\n  local:\n    type: openai\n    base_url: ${VLLM_URL:-http://127.0.0.1:8000/v1}\n"
        "models:\n  m: {local: {type: fake}}\n",
        env={},
    )
    assert loaded.config.providers["local"].base_url == "http://127.0.0.1:8000/v1"


def test_name_shared_by_model_and_system_is_refused() -> None:
    error = error_of("models:\n  a: {local: {type: fake}}\nsystems:\n  a: a\n")
    assert "both a model and a system" in str(error)


def test_unknown_fake_error_kind_is_refused() -> None:
    error = error_of("models:\n  a:\n    local: {type: fake, script: [{error: explode}]}\n")
    assert "unknown error kind 'explode'" in str(error)


def test_unknown_fake_error_kind_in_the_default_or_answers_is_refused() -> None:
    for where in ("default: {error: unavailble}", "answers: {hi: {error: unavailble}}"):
        error = error_of(f"models:\n  a:\n    local: {{type: fake, {where}}}\n")
        assert "unknown error kind 'unavailble'; did you mean 'unavailable'?" in str(error)
        assert "unavailable" in str(error)


def test_bad_base_url_is_refused() -> None:
    error = error_of("providers:\n  o: {type: openai, base_url: ftp://example.com}\n")
    assert "http:// or https://" in str(error)
    assert error.line == 2


def test_merge_keys_share_settings_and_keys_given_here_win() -> None:
    text = """
defaults: &fake
  local: {type: fake, default: shared}
  price: {input: 1.0, output: 2.0}
models:
  a: {<<: *fake}
  b:
    <<: *fake
    price: {input: 5.0, output: 5.0}
"""
    loaded = parse(text.replace("defaults:", "x-defaults:"), env={})
    assert loaded.config.models["a"].price.input == 1.0
    assert loaded.config.models["b"].price.input == 5.0


def test_tags_other_than_yaml_own_are_refused_with_the_line() -> None:
    for tag in ("!custom x", "!!python/name:os.system"):
        with pytest.raises(ConfigError) as caught:
            parse(
                f"models:\n  a:\n    local:\n      type: fake\n      default: {tag}\n",
                path="c.yaml",
            )
        assert str(caught.value).startswith("c.yaml:5: invalid YAML: unsupported tag")


def test_tags_on_mappings_and_sequences_are_refused_too() -> None:
    for tag in ("!include {file: other.yaml}", "!!python/object:os.system {}", "!custom [a]"):
        with pytest.raises(ConfigError) as caught:
            parse(f"models:\n  a: {{local: {{type: fake}}}}\nsystems:\n  s: {tag}\n", path="c.yaml")
        assert str(caught.value).startswith("c.yaml:4: invalid YAML: unsupported tag")


def test_a_file_that_is_not_utf8_is_refused_naming_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes("models:\n  a: {local: {type: fake, default: caf\xe9}}\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.line == 2
    assert "not UTF-8 text (byte 46" in str(caught.value)


def test_a_config_that_defines_nothing_is_refused() -> None:
    for text in ("", "# only a comment\n", "providers: {}\n"):
        with pytest.raises(ConfigError, match="defines no models, systems or embedders"):
            parse(text, env={})


def test_a_value_from_an_env_var_is_never_echoed_in_errors() -> None:
    text = (
        "providers:\n  p: {type: openai, base_url: '${URL}'}\nmodels:\n  a: {local: {type: fake}}\n"
    )
    secret = "ftp://svc:S3cr3tPassw0rd@proxy.internal.example.com/v1/with/a/long/path"
    with pytest.raises(ConfigError) as caught:
        parse(text, env={"URL": secret})
    assert "S3cr3t" not in str(caught.value) and "proxy.internal" not in str(caught.value)
    assert "got a 'ftp' URL" in str(caught.value)
    # Any message that does quote such a value shows the variable instead.
    assert hide_env_values(f"bad {secret}!", {secret: "URL"}) == "bad ${URL}!"


def test_an_unset_variable_in_a_number_field_is_named() -> None:
    text = "models:\n  a: {local: {type: fake, latency: '${SLOW}'}}\n"
    with pytest.raises(ConfigError) as caught:
        parse(text, path="c.yaml", env={})
    assert (
        str(caught.value)
        == "c.yaml:2: models.a.local.latency: environment variable SLOW is not set"
    )


def test_credentials_in_base_url_are_refused_without_echoing_the_password() -> None:
    error = error_of("providers:\n  o: {type: openai, base_url: 'http://qa:s3cret@h/v1'}\n")
    assert "must not hold credentials" in str(error)
    assert "'auth'" in str(error) and "'headers'" in str(error)
    assert "s3cret" not in str(error)
    assert error.line == 2


def test_a_model_with_neither_provider_nor_local_is_told_so() -> None:
    error = error_of("models:\n  empty: {}\n")
    assert "models.empty: needs 'provider' (a hosted model) or 'local'; neither is given" in str(
        error
    )


def test_a_model_with_both_provider_and_local_is_told_so() -> None:
    error = error_of(HOSTED.replace("    id: gpt", "    local: {type: fake}\n    id: gpt"))
    assert "give either 'provider' (a hosted model) or 'local', not both" in str(error)


def test_a_key_yaml_reads_as_a_boolean_is_refused_with_the_fix() -> None:
    text = (
        "models:\n  a: {local: {type: fake}}\n"
        "systems:\n  r:\n    type: router\n    routes:\n      yes: a\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse(text, path="c.yaml", env={})
    assert str(caught.value) == (
        "c.yaml:7: systems.r.routes: the key 'yes' reads as the boolean True;"
        ' quote it ("yes") to use it as a name'
    )


def test_a_yes_or_no_is_not_read_as_a_number() -> None:
    text = "models:\n  a: {local: {type: fake}, retry: {attempts: yes}}\n"
    with pytest.raises(ConfigError) as caught:
        parse(text, path="c.yaml", env={})
    assert str(caught.value) == "c.yaml:2: models.a.retry: attempts: expected a number, got true"


def test_every_unknown_reference_is_reported_at_once() -> None:
    text = (
        "models:\n  a: {local: {type: fake}}\nsystems:\n"
        "  s1: {type: fallback, chain: [a, bb]}\n  s2: {type: fallback, chain: [cc, a]}\n"
    )
    error = error_of(text)
    assert error.line == 4 and "unknown model or system 'bb'" in str(error)
    assert "cfg.yaml:5: systems.s2.chain[0]: unknown model or system 'cc'" in str(error)


def test_a_yes_or_no_is_not_read_as_a_number_under_a_fields_alias_either() -> None:
    from pydantic import Field, ValidationError

    from modelyard.config.base import Spec

    class Knob(Spec):
        cost_weight: float = Field(default=0.0, alias="lambda")

    assert Knob.model_validate({"lambda": 0.5}).cost_weight == 0.5
    with pytest.raises(ValidationError, match="lambda: expected a number, got true"):
        Knob.model_validate({"lambda": True})


def test_a_merged_anchor_brings_only_the_keys_taken_with_their_variables() -> None:
    text = (
        "x-openai: &oa\n  type: openai\n  api_key: '${OLD_KEY}'\n  optional: true\n"
        "providers:\n  oa:\n    <<: *oa\n    api_key: '${NEW_KEY}'\n  other: {<<: *oa}\n"
        "models:\n  a: {local: {type: fake}}\n"
    )
    loaded = parse(text, path="c.yaml", env={"NEW_KEY": "k"})
    built = build(loaded)
    # oa's own key hides the anchor's unset one; `other` takes it and, optional, is disabled;
    # the anchor itself, under x-, is nobody's provider.
    assert [n for n in built.notes if "is disabled" in n] == [
        "provider 'other' is disabled: environment variable OLD_KEY is not set"
    ]
    assert loaded.line(("providers", "oa")) == 6


def test_a_budget_hold_lease_too_short_to_renew_is_refused_naming_the_field() -> None:
    error = error_of(
        "state: {backend: memory, hold_lease: 2}\n" + "models:\n  a: {local: {type: fake}}\n"
    )
    assert "state.hold_lease" in str(error)
    assert "greater than or equal to 10" in str(error)
    assert error.line == 1


def test_an_api_key_written_in_the_file_is_warned_of_without_showing_it() -> None:
    inline = HOSTED.replace("${OPENAI_API_KEY}", "sk-written-in-the-file-1234")
    warnings = build(parse(inline, path="cfg.yaml", env={})).warnings
    assert [w for w in warnings if "api_key" in w] == [
        "provider 'openai': its api_key is written in the file (cfg.yaml:5), so every copy of "
        "the file holds it (the config history of gate --apply and rollback, calibrated "
        "configs, backups); give it as ${VAR}"
    ]
    from_env = build(parse(HOSTED, path="cfg.yaml", env={"OPENAI_API_KEY": "sk-env-123456"}))
    assert not [w for w in from_env.warnings if "api_key" in w]


@pytest.mark.parametrize(
    ("field", "value"),
    [("api_key", "$OPENAI_API_KEY"), ("base_url", "$VLLM_URL"), ("api_key", "%OPENAI_API_KEY%")],
)
def test_a_variable_written_without_braces_is_refused_with_the_braced_form(
    field: str, value: str
) -> None:
    """`api_key: $OPENAI_API_KEY` (shell and Docker Compose style) is not substituted: it had
    been sent to the provider as the key itself, with only a warning that the key was written
    in the file. The error names the variable and how to write it."""
    text = HOSTED.replace("api_key: ${OPENAI_API_KEY}", f"{field}: '{value}'")
    error = error_of(text, {"OPENAI_API_KEY": "k", "VLLM_URL": "http://h/v1"})
    assert error.line == 5
    name = value.strip("$%")
    assert f"providers.openai.{field}" in str(error)
    assert "${" + name + "}" in str(error) and "taken as written" in str(error)


def test_a_misspelt_member_is_answered_with_the_name_meant() -> None:
    error = error_of(
        "models:\n  front: {local: {type: fake}}\n  back: {local: {type: fake}}\n"
        "systems:\n  s: {type: fallback, chain: [fron, bakc]}\n"
    )
    assert "unknown model or system 'fron'; did you mean 'front'? known: back, front" in str(error)
    assert "unknown model or system 'bakc'; did you mean 'back'?" in str(error)


def test_a_misspelt_pattern_type_is_answered_with_the_type_meant() -> None:
    error = error_of("models:\n  a: {local: {type: fake}}\nsystems:\n  s: {type: casade}\n")
    assert "unknown type 'casade'; did you mean 'cascade'? expected one of: " in str(error)


@pytest.mark.parametrize(
    ("system", "where", "said"),
    [
        (
            "{type: cascade, stages: [{model: a}]}",
            "systems.s.stages",
            "1 given; a cascade needs at least two stages: a cheap one that answers when it is "
            "confident (a threshold and an estimator), and a last one that always answers",
        ),
        ("{type: ensemble, members: [a]}", "systems.s.members", "1 given; an ensemble needs"),
        ("{type: fallback, chain: []}", "systems.s.chain", "0 given; a fallback needs"),
        ("{type: pipeline, stages: []}", "systems.s.stages", "0 given; a pipeline needs"),
        ("{type: balance, members: []}", "systems.s.members", "0 given; a balance needs"),
        ("{type: router, routes: {}, default: a}", "systems.s.routes", "0 given; a router needs"),
    ],
)
def test_a_pattern_with_too_few_members_says_what_it_needs(
    system: str, where: str, said: str
) -> None:
    error = error_of(f"models:\n  a: {{local: {{type: fake}}}}\nsystems:\n  s: {system}\n")
    assert f"cfg.yaml:4: {where}: {said}" in str(error)
    assert "should have at least" not in str(error)


TIERED = HOSTED.replace(
    "    price: {input: 0.15, output: 0.6}\n",
    "    price:\n"
    "      input: 1.25\n"
    "      output: 10\n"
    "      cached_input: 0.125\n"
    "      above: {tokens: 200000, input: 2.5, output: 15}\n",
)


def test_a_long_context_tier_is_built_with_unset_cache_rates_scaled_as_input() -> None:
    built = build(parse(TIERED, env={"OPENAI_API_KEY": "k"}))
    price = built.models["gpt"].info.price
    assert price.above is not None and price.above.tokens == 200_000
    rates = price.above.rates
    assert (rates.input, rates.output, rates.cached_input) == (2.5, 15.0, 0.25)
    assert rates.cache_write is None


def test_a_long_context_threshold_of_zero_is_refused_with_its_line() -> None:
    error = error_of(TIERED.replace("tokens: 200000", "tokens: 0"), {"OPENAI_API_KEY": "k"})
    assert "models.gpt.price.above.tokens" in str(error)
    assert error.line == 14


def test_a_typo_in_a_long_context_tier_names_the_likely_fix() -> None:
    error = error_of(TIERED.replace("output: 15}", "ouput: 15}"), {"OPENAI_API_KEY": "k"})
    assert "models.gpt.price.above.ouput" in str(error)
    assert "did you mean 'output'" in str(error)


def test_a_long_context_tier_without_its_output_rate_is_refused() -> None:
    error = error_of(TIERED.replace(", output: 15}", "}"), {"OPENAI_API_KEY": "k"})
    assert "models.gpt.price.above.output" in str(error)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("${OPENAI_API_KEY", "${OPENAI_API_KEY"),  # the closing brace lost
        ("${OPENAI-API-KEY}", "${OPENAI"),  # a dash, which no variable name holds
        ("${OPENAI_API_KEY:http://h/v1}", "${OPENAI_API_KEY"),  # a default without its dash
        ("${sk-proj-abcdef123456}", "${sk"),  # a key put in braces: never echoed whole
    ],
)
def test_a_broken_variable_reference_is_refused_not_sent_as_written(value: str, shown: str) -> None:
    """`${OPENAI_API_KEY` (unclosed) had passed `check` as a key written in the file, and been
    sent to the provider as the key itself; the reference is named, never more of it than its
    variable-like start (the text in braces may be a secret)."""
    text = HOSTED.replace("api_key: ${OPENAI_API_KEY}", f"api_key: '{value}'")
    error = error_of(text, {"OPENAI_API_KEY": "k"})
    assert error.line == 5
    assert "providers.openai.api_key" in str(error)
    assert f"'{shown}'" in str(error) and "${VAR:-default}" in str(error)
    assert "abcdef" not in str(error)


def test_a_variable_value_holding_a_brace_is_not_taken_for_a_broken_reference() -> None:
    loaded = parse(HOSTED, env={"OPENAI_API_KEY": "sk-${odd"})
    assert loaded.config.providers["openai"].api_key is not None
    assert loaded.config.providers["openai"].api_key.get_secret_value() == "sk-${odd"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        # a key indented deeper than its sibling above
        ("models:\n  m:\n    local: {type: fake}\n      price: {input: 1}\n", 4),
        ("models:\n  m:\n   provider: p\n    id: x\n", 4),
        # a list item dedented out of its list
        (
            "systems:\n  s:\n    type: pipeline\n    stages:\n      - {name: a, model: m}\n"
            "    - {name: b, model: m}\nmodels:\n  m: {local: {type: fake}}\n",
            6,
        ),
    ],
)
def test_a_mis_indented_line_is_named_with_indentation_as_the_likely_cause(
    text: str, line: int
) -> None:
    """PyYAML's own words ("mapping values are not allowed here", "expected <block end>, but
    found '-'") do not say that indentation is what to look at."""
    error = error_of(text)
    assert error.line == line
    assert "indent" in str(error)


def test_an_api_key_written_as_a_variable_s_default_is_warned_of_as_that_default() -> None:
    """`${KEY:-sk-...}` had drawn the advice "give it as ${VAR}", which it already was: the
    key in the file is the default, and the way out is to drop it."""
    text = HOSTED.replace("${OPENAI_API_KEY}", "${OPENAI_API_KEY:-sk-default-in-file-99}")
    warnings = build(parse(text, path="cfg.yaml", env={})).warnings
    (warning,) = [w for w in warnings if "api_key" in w]
    assert "the default of ${OPENAI_API_KEY:-...}" in warning and "cfg.yaml:5" in warning
    assert "drop the default" in warning and "sk-default" not in warning
    from_env = build(parse(text, path="cfg.yaml", env={"OPENAI_API_KEY": "sk-env-123456"}))
    assert not [w for w in from_env.warnings if "api_key" in w]


def test_a_doubled_dollar_is_a_literal_reference_in_a_prompt() -> None:
    """A prompt may hold template text such as `${name}` or `${a.b}`: written `$${`, it is
    kept as `${`, neither read as a variable nor refused as a broken reference."""
    text = HOSTED + (
        "systems:\n"
        "  panel:\n"
        "    type: ensemble\n"
        "    members: [gpt, gpt]\n"
        "    combine: judge\n"
        "    judge: gpt\n"
        "    prompt: 'Fill $${user.name} and $${HOME} for ${WHO}: {question} {candidates}'\n"
    )
    loaded = parse(text, env={"OPENAI_API_KEY": "k", "WHO": "acme", "HOME": "/root"})
    panel: Any = loaded.config.systems["panel"]
    assert panel.prompt == "Fill ${user.name} and ${HOME} for acme: {question} {candidates}"
