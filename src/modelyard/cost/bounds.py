"""What a call can cost: the most (`cost_bound`, the worst case budgets reserve before it) and,
when it was cut short, what it likely spent (`partial_cost`, from its `partial_usage`).

The worst case of a system is the sum over every model call its graph contains: each leaf costs
at most its price times (input bounded by the prompt's UTF-8 length, see
`prices.bound_input_tokens`) plus (`max_tokens`, or the model's `max_output_tokens`, per choice).
That holds for fallbacks, cascades, ensembles and routers (a router calls one of its members,
the sum covers all). A node that calls a child more than once (retries) or feeds one model's
output into another (pipelines) must say so by defining `worst_case_cost(request)`.
"""

from __future__ import annotations

from dataclasses import replace

from modelyard.cost.dispatch import Dispatch
from modelyard.cost.prices import PER_MILLION, estimate_input_tokens, tokens_for_chars
from modelyard.errors import ModelError
from modelyard.model import Model
from modelyard.types import ChatRequest, Decision, Message, Usage


def cost_bound(model: Model, request: ChatRequest) -> float:
    """The most `request` can cost through `model` (see the module docstring for the bound)."""
    custom = getattr(model, "worst_case_cost", None)
    if callable(custom):
        return float(custom(request))
    children = model.children
    if not children:
        info = model.info
        return info.price.worst_case(request, info.capabilities.max_output_tokens)
    return sum(cost_bound(child, request) for child in children)


MAX_BYTES_PER_TOKEN = 8
"""What one output token can take as text, for bounding what another model reads: CJK text
takes about 3 bytes a token, runs of code indentation up to 8. (Input is bounded by bytes,
which is safe: a token is at least one byte.)"""


def output_bytes_bound(model: Model, request: ChatRequest) -> int:
    """The most bytes `model` can write for `request`: `max_tokens` (or the largest
    `max_output_tokens` under it) per choice, at `MAX_BYTES_PER_TOKEN`."""
    most = max(
        request.max_tokens or leaf.info.capabilities.max_output_tokens for leaf in leaves(model)
    )
    return most * request.n * MAX_BYTES_PER_TOKEN


def reading(request: ChatRequest, input_bytes: int, *, helper: bool = False) -> ChatRequest:
    """A stand-in for a call whose input is built from other calls' outputs, `input_bytes`
    long (`cost_bound` reads byte length): the caller's request with that prompt, or for a
    `helper` (a judge, checker, verifier: `patterns.records.derived`) a fresh one-message
    request that keeps none of the caller's `max_tokens`, `n` or tools, as the real call does."""
    if helper:
        from modelyard.patterns.records import derived  # the patterns use cost, not the reverse

        return derived(request, "x" * input_bytes)
    return replace(request, messages=(Message(role="user", content="x" * input_bytes),))


def partial_usage(
    request: ChatRequest, output_chars: int = 0, *, sent: bool = True
) -> Usage | None:
    """The tokens an interrupted call likely used, marked estimated: its input and the
    `output_chars` characters of output seen so far. None for a call that was never `sent`
    (`cost.dispatch`) and produced nothing: no provider received it."""
    if not (sent or output_chars):
        return None
    return Usage(
        input_tokens=estimate_input_tokens(request),
        output_tokens=tokens_for_chars(output_chars),
        estimated=True,
    )


def partial_cost(
    model: Model,
    request: ChatRequest,
    output_chars: int = 0,
    *,
    sent: bool = True,
    spent: float = 0.0,
) -> float:
    """An estimate of what an interrupted call spent: its `partial_usage` at the dearest prices
    under `model` (the provider bills what it generated, which we may not have seen all of, so
    lean high), nothing for a call that was never `sent`; plus `spent`, what the calls under it
    that had finished were billed (`Dispatch.spent`, `RequestScope.spent`)."""
    return spent + _dearest(model, partial_usage(request, output_chars, sent=sent))


def charge_partial(
    error: ModelError,
    model: Model,
    request: ChatRequest,
    output_chars: int = 0,
    *,
    sent: bool,
    spent: float = 0.0,
    dispatch: Dispatch | None = None,
) -> ModelError:
    """`error` (for an interrupted call) carrying its `partial_usage` and `partial_cost` (with
    `spent`), so a record shows the estimated tokens beside the estimated cost; its record, if
    it has one, carries that cost too (a pattern adds up its children's records, the ledger its
    leaves), and with the call's `dispatch`, the calls billed under it (`abandoned_calls`),
    their tokens too. `error.usage` is the cut call's tokens; its record's, with those of the
    calls under it that had finished."""
    error.usage = partial_usage(request, output_chars, sent=sent)
    estimate = _dearest(model, error.usage)
    error.cost = spent + estimate
    decision = error.decision
    if decision is not None:
        calls = () if dispatch is None else abandoned_calls(model, dispatch, estimate, error.usage)
        if calls:
            error.decision = replace(decision, cost=error.cost, children=calls)
        elif not decision.children:  # the cut call's own record: its cost and tokens
            used = with_finished(error.usage, dispatch)
            error.decision = replace(decision, cost=error.cost, usage=used)
        elif decision.cost != error.cost:
            error.decision = replace(decision, cost=error.cost)
    return error


def with_finished(usage: Usage | None, dispatch: Dispatch | None) -> Usage | None:
    """The tokens of a configured model's call cut short, estimated as `usage`, with those of
    its calls under `dispatch` that had finished (tries a retry made before it): what its
    record shows beside its cost. None when neither is known."""
    for used in dispatch.used_by_model.values() if dispatch is not None else ():
        usage = used if usage is None else usage + used
    return usage


def abandoned_calls(
    model: Model, dispatch: Dispatch, estimate: float, usage: Usage | None = None
) -> tuple[Decision, ...]:
    """The billed calls under `model`, a node abandoned before its answer, as the records the
    ledger bills per model: each model's calls that had finished (`dispatch.by_model`, with
    their tokens), and the `estimate` of the one cut (with any spend no model was named for),
    for its estimated tokens `usage`, under the model it was waiting for (`dispatch.flying`),
    else `billed_node`.
    Empty for a configured model (its wrappers, a meter or retries, call only it): its own
    record is its call."""
    under = leaves(model)
    if len(under) == 1 and under[0].name == model.name:
        return ()
    used = dispatch.used_by_model
    calls = [
        Decision(
            node=name,
            kind="model",
            reason="finished before it was abandoned",
            cost=cost,
            usage=used.get(name),
        )
        for name, cost in dispatch.by_model.items()
    ]
    unnamed = estimate + dispatch.spent - sum(dispatch.by_model.values())
    if unnamed > 1e-12:
        calls.append(
            Decision(
                node=waited_for(model, dispatch),
                kind="model",
                reason="cut before its answer; cost estimated",
                cost=unnamed,
                usage=usage,
            )
        )
    return tuple(calls)


def _dearest(model: Model, usage: Usage | None) -> float:
    """What `usage` costs at the dearest prices of the models under `model` (each at the
    tier its input tokens reach)."""
    if usage is None:
        return 0.0
    prices = [m.info.price.at(usage.input_tokens) for m in leaves(model)]
    input_rate = max(p.dearest_input for p in prices)
    output_rate = max(p.output for p in prices)
    return (usage.input_tokens * input_rate + usage.output_tokens * output_rate) / PER_MILLION


def waited_for(model: Model, dispatch: Dispatch) -> str:
    """The name the estimate of `model`'s call abandoned is billed under: the one model it
    was waiting for (`Dispatch.flying`), else `billed_node`."""
    flying = set(dispatch.flying)
    return flying.pop() if len(flying) == 1 else billed_node(model)


def billed_node(model: Model) -> str:
    """The name a call through `model` that was cut short is billed under (the ledger's model
    column): the one model under it, else `model` itself, since which of several was answering
    is not known once the call is cut."""
    under = leaves(model)
    return under[0].name if len(under) == 1 else model.name


def leaves(model: Model) -> list[Model]:
    """The models under `model` that call no other (the ones that are billed)."""
    if not model.children:
        return [model]
    return [leaf for child in model.children for leaf in leaves(child)]
