"""Pipeline quality gates: checks a stage's output must pass before the next stage reads it.
JSON Schema, a regex, a confidence threshold, a checker Model's verdict, or a Python callable.
Each returns a `GateResult` with the reason in words and anything it spent."""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from modelyard.errors import ModelError, ModelTimeoutError
from modelyard.functions import SHARED_THREADS, FunctionThreads, call_function
from modelyard.model import Model
from modelyard.patterns.confidence import parse_verdict
from modelyard.patterns.normalise import parse_json_answer
from modelyard.patterns.records import answered, derived, failed, fill, filled_size
from modelyard.resilience.deadline import by_deadline
from modelyard.types import ChatRequest, ChatResponse, Decision

CHECKER_PROMPT = (
    "Check the output of a step.\n\nInput:\n{input}\n\nOutput:\n{output}\n\n"
    "Is the output correct and complete for the input? Reply with yes or no, or a score "
    "from 0 to 1."
)


@dataclass(frozen=True, slots=True)
class GateResult:
    """Whether the output passed, why, and what checking it cost."""

    passed: bool
    reason: str
    cost: float = 0.0
    decision: Decision | None = None
    error: ModelError | None = None
    """Why the gate could not judge at all (its checker failed): no verdict on the output."""


class Gate(abc.ABC):
    """A check on a stage's output."""

    name: str

    @abc.abstractmethod
    async def check(
        self, response: ChatResponse, stage_input: str, request: ChatRequest
    ) -> GateResult:
        """Check `response` (the stage's answer to `stage_input`)."""

    def models(self) -> Sequence[Model]:
        """Models the gate calls."""
        return ()

    def input_bound(self, stage_input: int, output: int) -> int:
        """The most bytes its models read, given the stage's input and output sizes."""
        return stage_input + output


class JsonSchemaGate(Gate):
    """The output must be JSON (bare or fenced) valid against a schema."""

    def __init__(self, schema: Mapping[str, Any], name: str = "json_schema") -> None:
        Draft202012Validator.check_schema(schema)
        self.validator = Draft202012Validator(schema)
        self.name = name

    async def check(
        self, response: ChatResponse, stage_input: str, request: ChatRequest
    ) -> GateResult:
        try:
            value = parse_json_answer(response.text)
        except ValueError:
            return GateResult(False, "the output is not JSON")
        error = best_match(self.validator.iter_errors(value))
        if error is None:
            return GateResult(True, "valid against the schema")
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return GateResult(False, f"schema violation at {where}: {error.message}")


class RegexGate(Gate):
    """The output must (or must not) contain a match of a regex."""

    def __init__(self, pattern: str, must_match: bool = True, name: str | None = None) -> None:
        self.pattern = re.compile(pattern)
        self.must_match = must_match
        self.name = name or f"regex /{pattern}/"

    async def check(
        self, response: ChatResponse, stage_input: str, request: ChatRequest
    ) -> GateResult:
        found = self.pattern.search(response.text) is not None
        if found == self.must_match:
            return GateResult(True, "matched" if found else "did not match, as required")
        return GateResult(False, "no match" if self.must_match else "matched, which is not allowed")


class ConfidenceGate(Gate):
    """The stage's own `response.confidence` must reach a minimum."""

    def __init__(self, minimum: float, name: str | None = None) -> None:
        self.minimum = minimum
        self.name = name or f"confidence >= {minimum:g}"

    async def check(
        self, response: ChatResponse, stage_input: str, request: ChatRequest
    ) -> GateResult:
        value = response.confidence
        if value is None:
            return GateResult(False, "the stage gave no confidence")
        if value >= self.minimum:
            return GateResult(True, f"confidence {value:.3f} >= {self.minimum:g}")
        return GateResult(False, f"confidence {value:.3f} < {self.minimum:g}")


class CheckerGate(Gate):
    """A checker Model reads input and output and answers yes/no or a score."""

    def __init__(
        self,
        model: Model,
        min_score: float = 0.5,
        prompt: str | None = None,
        name: str | None = None,
    ) -> None:
        self.model = model
        self.min_score = min_score
        self.prompt = prompt or CHECKER_PROMPT
        self.name = name or f"checker {model.name}"

    def models(self) -> Sequence[Model]:
        return (self.model,)

    def input_bound(self, stage_input: int, output: int) -> int:
        return filled_size(self.prompt, {"input": stage_input, "output": output})

    async def check(
        self, response: ChatResponse, stage_input: str, request: ChatRequest
    ) -> GateResult:
        text = fill(self.prompt, {"input": stage_input, "output": response.text})
        try:
            verdict = await self.model.complete(derived(request, text))
        except ModelError as exc:
            reason = f"checker {self.model.name} failed ({exc.kind})"
            return GateResult(False, reason, exc.cost, failed(self.model, exc), exc)
        record = answered(self.model, verdict)
        score = parse_verdict(verdict.text)
        if score is None:
            said = verdict.text.strip()[:40]
            return GateResult(False, f"checker said {said!r}: no verdict", verdict.cost, record)
        passed = score >= self.min_score
        sign = ">=" if passed else "<"
        return GateResult(
            passed, f"checker score {score:.3f} {sign} {self.min_score:g}", verdict.cost, record
        )


class CallableGate(Gate):
    """A Python function `(output: str, response) -> bool` (sync or async) decides; anything but
    a bool (numpy's too) fails the gate, saying what it was."""

    def __init__(
        self, function: Callable[..., Any], name: str, *, threads: FunctionThreads = SHARED_THREADS
    ) -> None:
        self.function = function
        self.name = name
        self.threads = threads

    async def check(
        self, response: ChatResponse, stage_input: str, request: ChatRequest
    ) -> GateResult:
        try:
            call = call_function(self.function, response.text, response, threads=self.threads)
            verdict = await by_deadline(call, request, self.name, "before it gave a verdict")
        except ModelTimeoutError as exc:  # no verdict, as from a checker that timed out
            return GateResult(False, f"{self.name} gave no verdict before the deadline", error=exc)
        except Exception as exc:  # a user's function: its failure is the gate's failure
            return GateResult(False, f"raised {type(exc).__name__}: {exc}")
        if not isinstance(verdict, bool | np.bool_):  # 'false', None: a mistake, not a verdict
            what = f"{verdict!r}"[:40]
            return GateResult(
                False, f"returned {what} ({type(verdict).__name__}), not true or false"
            )
        return GateResult(bool(verdict), "returned true" if verdict else "returned false")
