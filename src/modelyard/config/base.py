"""The base every config section shares: unknown keys are errors, values are immutable, a
yes/no is never read as a number, and a list too short says what it needs (`AtLeast`)."""

from __future__ import annotations

import types
from collections.abc import Sized
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema


class Spec(BaseModel):
    """A validated piece of config. `extra="forbid"` turns a typo into an error, not a no-op."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_numbers(cls, data: Any) -> Any:
        # Pydantic reads `deadline: true` as 1 and `retries: yes` as 1; the JSON Schema (and so
        # every editor) refuses them, and so does this.
        if isinstance(data, dict):
            fields = {f.alias or name: f for name, f in cls.model_fields.items()}
            fields.update(cls.model_fields)  # the file may use the alias or the name
            for key, value in data.items():
                field = fields.get(key) if isinstance(value, bool) else None
                if field is not None and _numeric(field.annotation):
                    raise ValueError(f"{key}: expected a number, got {str(value).lower()}")
        return data


def _numeric(annotation: Any) -> bool:
    """Whether a field takes a number and not a boolean (int, float, or an optional one)."""
    if get_origin(annotation) is Annotated:
        return _numeric(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        return bool(options) and all(_numeric(a) for a in options)
    return annotation in (int, float)


@dataclass(frozen=True, slots=True)
class AtLeast:
    """A list or mapping field's fewest items, with what the field needs them for: a short one
    is refused in those words ("1 given; a cascade needs at least two stages: ...") rather
    than pydantic's "List should have at least 2 items". The JSON Schema still says minItems."""

    count: int
    needs: str
    """The whole requirement, as a person reads it: "a fallback needs at least one ..."."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        key = "minProperties" if json_schema.get("type") == "object" else "minItems"
        json_schema[key] = self.count
        return json_schema

    def _check(self, value: Sized) -> Sized:
        if len(value) < self.count:
            raise ValueError(f"{len(value)} given; {self.needs}")
        return value
