"""The JSON Schema for editors is generated from the config models and kept current."""

from __future__ import annotations

import json

import jsonschema
import yaml
from tests.conftest import EXAMPLES, ROOT

from modelyard.config.schema import Config

SCHEMA_FILE = ROOT / "docs" / "modelyard.schema.json"


def test_committed_schema_matches_the_config_models() -> None:
    committed = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert committed == Config.model_json_schema(), (
        "docs/modelyard.schema.json is stale: run `modelyard schema -o docs/modelyard.schema.json`"
    )


def test_every_example_validates_against_the_schema() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    for path in sorted(EXAMPLES.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        jsonschema.validate(data, schema)


def test_schema_refuses_an_unknown_key() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    errors = list(validator.iter_errors({"modles": {}}))
    assert errors and "modles" in errors[0].message


def test_schema_accepts_top_level_x_keys_as_the_loader_does() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    anchored = {"x-defaults": {"price": {"input": 1}}, "models": {"a": {"local": {"type": "fake"}}}}
    assert list(validator.iter_errors(anchored)) == []
    assert list(validator.iter_errors({"y-defaults": {}}))  # only x- is set aside
