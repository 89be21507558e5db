"""The base every config section shares: unknown keys are errors, values are immutable, and a
yes/no is never read as a number."""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator


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
