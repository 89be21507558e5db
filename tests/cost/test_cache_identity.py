"""What the cache keys a node's answers on, through the real loader and build: the resolved specs
that decide them. A `${VAR}` feeding an answer misses; edits that cannot change an answer, and a
rotated key, keep the cached answers; a downgraded answer is never stored as the primary's."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

import modelyard
from modelyard.config.answers import RULES, AnswerVersions
from modelyard.config.loader import parse
from modelyard.types import ChatRequest, ChatResponse
from tests.cost.helpers import LONG, TIERS
from tests.fakes.openai_server import FakeOpenAI, Reply

WriteConfig = Callable[..., Path]

BASE = """
models:
  alpha:
    local: {type: fake, default: "alpha answer"}
    price: {input: 1.0, output: 1.0}
  beta:
    local: {type: fake, default: "beta answer"}
    price: {input: 1.0, output: 1.0}
systems:
  first: {type: fallback, chain: [alpha]}
  second: {type: fallback, chain: [beta]}
cache: {backend: sqlite}
"""
"""Two unrelated systems; a sqlite cache, so cached answers outlive each load."""


def echo_system(request: ChatRequest) -> str:
    """A callable model that answers with the system prompt it was given."""
    return request.system or "(none)"


def hit(response: ChatResponse) -> bool:
    """Whether `response` was served from the cache."""
    return response.decision is not None and response.decision.kind == "cache"


async def ask(path: Path, target: str, env: dict[str, str] | None = None) -> ChatResponse:
    """`target`'s answer to one fixed question from a fresh load of `path` (a restart)."""
    async with modelyard.load(path, env=env or {}) as yard:
        return await yard.complete(target, "What is the return window?", temperature=0)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda text: "# reviewed by ops\n" + text, id="a comment"),
        pytest.param(lambda text: text.replace("\n", "\n\n"), id="the layout"),
        pytest.param(
            lambda text: text + "budgets:\n  - {name: all, scope: total, limit: 100}\n",
            id="a budget",
        ),
        pytest.param(lambda text: text + "tracing: {exporter: global}\n", id="tracing"),
        pytest.param(lambda text: text + "alerts: {log: false}\n", id="alerts"),
        pytest.param(
            lambda text: text.replace("{backend: sqlite}", "{backend: sqlite, ttl: 7200}"),
            id="the cache's ttl",
        ),
        pytest.param(
            lambda text: text.replace(
                'default: "alpha answer"}', 'default: "alpha answer"}\n    retry: {attempts: 5}'
            ),
            id="a model's retries",
        ),
    ],
)
async def test_an_edit_that_cannot_change_an_answer_keeps_the_cached_answers(
    write_config: WriteConfig, edit: Callable[[str], str]
) -> None:
    path = write_config(BASE)
    first = await ask(path, "first")
    path.write_text(edit(BASE), encoding="utf-8")
    again = await ask(path, "first")
    assert not hit(first) and hit(again) and again.text == first.text


ROUTED = """
models:
  alpha:
    local: {type: fake, default: "alpha answer"}
  beta:
    local: {type: fake, default: "beta answer"}
  unsure:
    local: {type: fake, default: {text: "unsure answer", confidence: 0.6}}
  said:
    local: {type: fake, default: "${REPLY:-one}"}
  echo:
    local: {type: callable, function: "tests.cost.test_cache_identity:echo_system"}
systems:
  reply: {type: fallback, chain: [said]}
  routed:
    type: router
    routes: {a: alpha, b: beta}
    rules: [{route: a, keywords: [xyzzy]}]
    default: "${ROUTE:-a}"
  tiered:
    type: cascade
    stages:
      - {model: unsure, threshold: "${THRESHOLD:-0.5}", estimator: {type: confidence}}
      - {model: alpha}
  prompted:
    type: pipeline
    stages: [{model: echo, system: "${PROMPT:-Be brief.}"}]
cache: {backend: sqlite}
"""
"""Answers that hang on environment variables: a model's reply, a router's default route, a
cascade's threshold and a pipeline stage's system prompt."""


@pytest.mark.parametrize(
    ("system", "variable", "before", "after", "answer"),
    [
        ("reply", "REPLY", "one", "two", "two"),
        ("routed", "ROUTE", "a", "b", "beta answer"),
        ("tiered", "THRESHOLD", "0.5", "0.9", "alpha answer"),
        ("prompted", "PROMPT", "Be brief.", "Answer in French.", "Answer in French."),
    ],
)
async def test_a_variable_that_feeds_an_answer_is_part_of_the_key(
    write_config: WriteConfig, system: str, variable: str, before: str, after: str, answer: str
) -> None:
    path = write_config(ROUTED)
    first = await ask(path, system, {variable: before})
    again = await ask(path, system, {variable: after})
    assert first.text != answer
    assert not hit(again) and again.text == answer


HOSTED = """
providers:
  vllm: {type: openai, base_url: "${VLLM_URL}", api_key: "${VLLM_KEY}"}
models:
  served:
    provider: vllm
    id: gpt-4o-mini-2024-07-18
    price: {input: 0.15, output: 0.6}
systems:
  main: {type: fallback, chain: [served]}
cache: {backend: sqlite}
"""


@pytest.fixture
def servers() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    """Two OpenAI-compatible servers on loopback that answer differently."""
    one, two = FakeOpenAI(), FakeOpenAI()
    with one.running(), two.running():
        yield one, two


async def test_a_base_url_from_the_environment_is_part_of_the_key(
    write_config: WriteConfig, servers: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    one, two = servers
    one.script(Reply(text="from one"))
    two.script(Reply(text="from two"))
    path = write_config(HOSTED)
    first = await ask(path, "main", {"VLLM_URL": f"{one.url}/v1", "VLLM_KEY": "sk-a"})
    again = await ask(path, "main", {"VLLM_URL": f"{two.url}/v1", "VLLM_KEY": "sk-a"})
    assert (first.text, again.text) == ("from one", "from two")
    assert len(two.requests) == 1


@pytest.mark.parametrize("where", ["environment", "file"])
async def test_a_rotated_api_key_keeps_the_cached_answers(
    write_config: WriteConfig, servers: tuple[FakeOpenAI, FakeOpenAI], where: str
) -> None:
    server, _ = servers
    url = f"{server.url}/v1"
    if where == "file":
        path = write_config(HOSTED.replace('"${VLLM_KEY}"', "sk-old-0123456789"))
        first = await ask(path, "main", {"VLLM_URL": url})
        path.write_text(HOSTED.replace('"${VLLM_KEY}"', "sk-new-9876543210"), encoding="utf-8")
        again = await ask(path, "main", {"VLLM_URL": url})
    else:
        path = write_config(HOSTED)
        first = await ask(path, "main", {"VLLM_URL": url, "VLLM_KEY": "sk-old-0123456789"})
        again = await ask(path, "main", {"VLLM_URL": url, "VLLM_KEY": "sk-new-9876543210"})
    assert hit(again) and again.text == first.text
    assert len(server.requests) == 1


def test_no_secret_is_in_what_the_key_is_made_of() -> None:
    text = HOSTED.replace(
        "api_key:", 'headers: {Authorization: "Bearer ${TOKEN}"}, query: {sig: "${SIG}"}, api_key:'
    )
    secrets = {"VLLM_KEY": "sk-key-0123456789", "TOKEN": "tok-0123456789", "SIG": "sig-012345"}
    env = {"VLLM_URL": "http://127.0.0.1:9/v1", **secrets}
    material = AnswerVersions(parse(text, env=env)).material("main")
    dumped = orjson.dumps(material).decode()
    assert not [value for value in secrets.values() if value in dumped]
    assert material["providers"]["vllm"]["api_key"] == "set"
    assert material["providers"]["vllm"]["base_url"] == "http://127.0.0.1:9/v1"


async def test_a_key_that_turns_an_optional_provider_on_is_part_of_the_key(
    write_config: WriteConfig, servers: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    server, _ = servers
    server.script(Reply(text="from the server"))
    unsure = "  unsure:\n    local: {type: fake, default: {text: unsure, confidence: 0.6}}\n"
    stages = "[{model: unsure, threshold: 0.9, estimator: {type: confidence}}, {model: served}]"
    text = (
        HOSTED.replace("base_url:", "optional: true, base_url:")
        .replace("models:\n", "models:\n" + unsure)
        .replace("{type: fallback, chain: [served]}", f"{{type: cascade, stages: {stages}}}")
    )
    path = write_config(text)
    url = {"VLLM_URL": f"{server.url}/v1"}
    first = await ask(path, "main", url)
    again = await ask(path, "main", {**url, "VLLM_KEY": "sk-set-0123456789"})
    assert (first.text, again.text) == ("unsure", "from the server")


async def test_a_changed_model_misses_for_its_system_only(write_config: WriteConfig) -> None:
    path = write_config(BASE)
    await ask(path, "first")
    await ask(path, "second")
    path.write_text(BASE.replace('"alpha answer"', '"alpha, revised"'), encoding="utf-8")
    first, second = await ask(path, "first"), await ask(path, "second")
    assert not hit(first) and first.text == "alpha, revised"
    assert hit(second)


async def test_an_edited_knowledge_base_misses(write_config: WriteConfig) -> None:
    faq = '{{"question": "What is the return window?", "answer": "{}"}}\n'
    kb = write_config(faq.format("30 days"), "kb.jsonl")
    path = write_config(
        """
embedders:
  hash: {local: {type: hashing}}
models:
  faq: {local: {type: retriever, embedder: hash, knowledge_base: kb.jsonl}}
systems:
  help: {type: fallback, chain: [faq]}
cache: {backend: sqlite}
"""
    )
    assert (await ask(path, "help")).text == "30 days"
    kb.write_text(faq.format("60 days"), encoding="utf-8")
    again = await ask(path, "help")
    assert not hit(again) and again.text == "60 days"


async def test_a_new_semantic_embedder_never_compares_the_old_vectors(
    write_config: WriteConfig,
) -> None:
    semantic = "  semantic: {embedder: hash, systems: [first], threshold: 0.8}\n"
    text = BASE.replace("cache: {backend: sqlite}\n", "cache:\n  backend: sqlite\n" + semantic)
    text += "embedders:\n  hash: {local: {type: hashing, dimensions: 256}}\n"
    path = write_config(text)
    await ask(path, "first")
    path.write_text(text.replace("256", "512"), encoding="utf-8")
    async with modelyard.load(path) as yard:
        near = await yard.complete("first", "what is the return window", temperature=0)
    assert not hit(near)


DOWNGRADING = (
    TIERS
    + """
budgets:
  - {name: p, scope: system, selector: premium, limit: 0.05, action: downgrade,
     downgrade_to: budget}
state: {backend: memory}
cache: {backend: sqlite}
"""
)
"""Room for one dear answer, then the budget sends `premium` to `budget`. Budget counters live
in memory, so a fresh load is a budget that has recovered; cached answers are in sqlite."""


async def test_a_downgraded_answer_is_not_served_once_the_budget_recovers(
    write_config: WriteConfig,
) -> None:
    path = write_config(DOWNGRADING)
    async with modelyard.load(path) as yard:
        await yard.complete("premium", "first question", max_tokens=1000)
        downgraded = await yard.complete("premium", "second question", max_tokens=1000)
        cheaper = await yard.complete("budget", "second question", max_tokens=1000)
    async with modelyard.load(path) as yard:
        recovered = await yard.complete("premium", "second question", max_tokens=1000)
    assert downgraded.text == "cheap answer" and hit(cheaper)
    assert not hit(recovered) and recovered.text == LONG


def test_every_field_the_rules_name_exists() -> None:
    """A renamed field must not fall back into the key (or, worse, out of hiding) unnoticed."""
    missing = [
        f"{spec.__name__}.{field}"
        for spec, fields in RULES.items()
        for field in fields
        if field not in spec.model_fields
    ]
    assert missing == []


async def test_a_system_that_names_a_model_is_cached_on_that_models_spec(
    write_config: WriteConfig,
) -> None:
    # `main: alpha` is a plain name, not a pattern: its version follows the name.
    text = BASE.replace("systems:\n", "systems:\n  main: alpha\n")
    path = write_config(text)
    first = await ask(path, "main")
    assert first.text == "alpha answer" and not hit(first)
    assert hit(await ask(path, "main"))
    path.write_text(text.replace('default: "alpha answer"', 'default: "new answer"'))
    assert (await ask(path, "main")).text == "new answer"
