"""Builders for the models that run in this process: the scripted fake, Python callables and
the hashing embedder (`providers.fake`, `providers.local_basic`), and those of the local extra
(`modelyard.local`): llama.cpp, MiniLM, language detection, classifiers and FAQ retrievers.

Weights and trained models are loaded through `Resources.cached`, keyed by everything that
changes them, so a hot reload reuses what an unchanged spec already loaded. The local extra's
packages are imported inside the loaders: a config that uses none of these types never needs
them, and one that does without the extra gets a ConfigError saying how to install it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import orjson

from modelyard.config.build import LOCAL_BUILDERS, LOCAL_EMBEDDER_BUILDERS, BuildContext
from modelyard.config.loader import Loc
from modelyard.config.local import (
    CallableSpec,
    ClassifierSpec,
    FakeEmbedderSpec,
    FakeSpec,
    LangDetectSpec,
    LlamaCppSpec,
    MiniLMSpec,
    ReplySpec,
    RetrieverSpec,
)
from modelyard.errors import ConfigError
from modelyard.functions import import_function
from modelyard.model import Embedder, Model, ModelInfo
from modelyard.providers.fake import Reply, ScriptedModel
from modelyard.providers.local_basic import FunctionModel, HashingEmbedder
from modelyard.resilience.deadline import HeldToDeadline

T = TypeVar("T")


def _at(context: BuildContext, loc: Loc, load: Callable[[], T]) -> T:
    """Run `load`, turning its ConfigError into one that names the place in the config."""
    try:
        return load()
    except ConfigError as exc:
        raise context.error(loc, str(exc)) from None


def _digest(*parts: object) -> str:
    return hashlib.sha256(orjson.dumps(parts, default=str)).hexdigest()[:16]


def _embedder_fingerprint(context: BuildContext, name: str) -> str:
    """What identifies an embedder's vectors across reloads: its whole spec."""
    return context.loaded.config.embedders[name].model_dump_json()


def _reply(spec: ReplySpec | str, latency: float) -> Reply:
    if isinstance(spec, str):
        return Reply(text=spec, latency=latency)
    return Reply(
        text=spec.text,
        error=spec.error,
        retry_after=spec.retry_after,
        latency=spec.latency or latency,
        confidence=spec.confidence,
        logprob=spec.logprob,
        cut_after=spec.cut_after,
    )


def _build_fake(spec: FakeSpec, context: BuildContext, loc: Loc, info: ModelInfo) -> Model:
    return ScriptedModel(
        info=info,
        answers={k: _reply(v, spec.latency) for k, v in spec.answers.items()},
        script=[_reply(item, spec.latency) for item in spec.script],
        default=_reply(spec.default, spec.latency),
    )


def _build_callable(spec: CallableSpec, context: BuildContext, loc: Loc, info: ModelInfo) -> Model:
    field_name = "function" if spec.function is not None else "factory"
    dotted_name = spec.function or spec.factory
    assert dotted_name is not None  # the spec holds exactly one of them
    try:
        function = import_function(dotted_name)
    except ConfigError as exc:
        raise context.error((*loc, field_name), exc.message) from None
    if spec.factory is not None:
        function = _from_factory(spec, function, context, loc)
    threads = context.function_threads()
    return HeldToDeadline(FunctionModel(info, function, source=dotted_name, threads=threads))


def _from_factory(
    spec: CallableSpec, factory: Callable[..., Any], context: BuildContext, loc: Loc
) -> Callable[..., Any]:
    """The answering function `factory` makes from the spec's files (checked to exist first)."""
    paths = {}
    for key, value in spec.files.items():
        path = context.path(value)
        if not path.is_file():
            raise context.error((*loc, "files", key), f"file not found: {path}")
        paths[key] = path
    try:
        function = factory(**paths)
    except ConfigError as exc:
        raise context.error((*loc, "files"), str(exc)) from None
    except Exception as exc:
        raise context.error(
            (*loc, "factory"), f"{spec.factory} failed: {type(exc).__name__}: {exc}"
        ) from None
    if not callable(function):
        raise context.error(
            (*loc, "factory"),
            f"{spec.factory} returned {type(function).__name__}, not a function of the request",
        )
    return function  # type: ignore[no-any-return]


def _build_hashing(
    spec: FakeEmbedderSpec, context: BuildContext, loc: Loc, info: ModelInfo
) -> Embedder:
    return HashingEmbedder(info, spec.dimensions)


def build_llama(spec: LlamaCppSpec, context: BuildContext, loc: Loc, info: ModelInfo) -> Model:
    """A llama.cpp chat model; the weights load once per process."""
    from modelyard.local.llama import LlamaModel
    from modelyard.local.llama_engine import LlamaEngine, Sampling, resolve_gguf

    path = _at(context, (*loc, "gguf"), lambda: resolve_gguf(spec.gguf, context.path))
    key = f"llama_cpp|{path}|{spec.n_ctx}|{spec.threads}"
    engine = _at(
        context,
        loc,
        lambda: context.resources.cached(
            key, lambda: LlamaEngine(path, n_ctx=spec.n_ctx, threads=spec.threads)
        ),
    )
    declared = context.loaded.config.models[info.name].capabilities
    capabilities = replace(
        info.capabilities,
        context_window=info.capabilities.context_window or spec.n_ctx,
        max_output_tokens=min(info.capabilities.max_output_tokens, spec.n_ctx),
        logprobs=True if declared.logprobs is None else declared.logprobs,
        json_schema=True if declared.json_schema is None else declared.json_schema,
    )
    sampling = Sampling(
        temperature=spec.temperature,
        top_p=spec.top_p,
        top_k=spec.top_k,
        min_p=spec.min_p,
        repeat_penalty=spec.repeat_penalty,
        seed=spec.seed,
    )
    model_info = replace(info, capabilities=capabilities, provider="local")
    return LlamaModel(model_info, engine, sampling=sampling)


def build_langdetect(
    spec: LangDetectSpec, context: BuildContext, loc: Loc, info: ModelInfo
) -> Model:
    """fastText language identification (bundled lite model)."""
    from modelyard.local.langdetect import LanguageDetector, LanguageModel

    detector = _at(
        context,
        loc,
        lambda: context.resources.cached(
            f"langdetect|{spec.max_chars}", lambda: LanguageDetector(max_chars=spec.max_chars)
        ),
    )
    model_info = replace(info, provider="local", model_id="fasttext-lid.176-lite")
    return LanguageModel(model_info, detector, top_k=spec.top_k)


def _examples(spec: ClassifierSpec, context: BuildContext, loc: Loc) -> dict[str, list[str]]:
    from modelyard.local.datasets import group_examples, read_examples

    examples: dict[str, list[str]] = {}
    for label, texts in (spec.examples or {}).items():
        if not texts:
            raise context.error((*loc, "examples", label), f"label {label!r} has no examples")
        for i, text in enumerate(texts):
            if not text.strip():
                raise context.error((*loc, "examples", label, i), "empty example text")
        examples[label] = [t.strip() for t in texts]
    if spec.examples_file is not None:
        path = context.path(spec.examples_file)
        pairs = _at(context, (*loc, "examples_file"), lambda: read_examples(path))
        for label, texts in group_examples(pairs).items():
            examples.setdefault(label, []).extend(texts)
    if len(examples) < 2:
        raise context.error(
            loc, f"a classifier needs examples of at least 2 labels, got {sorted(examples)}"
        )
    return examples


def build_classifier(
    spec: ClassifierSpec, context: BuildContext, loc: Loc, info: ModelInfo
) -> Model:
    """A classifier trained now on a synchronous embedder, else on its first request."""
    from modelyard.local.classifier import ClassifierModel, example_texts, train
    from modelyard.local.vectors import SyncEncoder, encode_now

    embedder = context.embedder(spec.embedder, (*loc, "embedder"))
    examples = _examples(spec, context, loc)
    l2 = spec.l2 or 0.001
    trained = None
    if isinstance(embedder, SyncEncoder):
        fingerprint = _embedder_fingerprint(context, spec.embedder)
        key = "classifier|" + _digest(examples, spec.method, spec.temperature, l2, fingerprint)

        def fit() -> object:
            vectors = encode_now(embedder, example_texts(examples))
            assert vectors is not None  # a SyncEncoder always encodes
            return train(examples, vectors, method=spec.method, temperature=spec.temperature, l2=l2)

        trained = context.resources.cached(key, fit)
    model_info = replace(info, provider="local")
    return ClassifierModel(
        model_info,
        embedder,
        examples,
        method=spec.method,
        temperature=spec.temperature,
        l2=l2,
        trained=trained,
    )


def build_retriever(spec: RetrieverSpec, context: BuildContext, loc: Loc, info: ModelInfo) -> Model:
    """An FAQ retriever; its questions are embedded now on a synchronous embedder."""
    from modelyard.local.datasets import read_faq
    from modelyard.local.retriever import FaqIndex, RetrieverModel, questions_of
    from modelyard.local.vectors import SyncEncoder, encode_now

    embedder = context.embedder(spec.embedder, (*loc, "embedder"))
    path = context.path(spec.knowledge_base)
    entries = _at(context, (*loc, "knowledge_base"), lambda: read_faq(path))
    index = None
    if isinstance(embedder, SyncEncoder):
        key = "retriever|" + _digest(entries, _embedder_fingerprint(context, spec.embedder))

        def embed() -> FaqIndex:
            vectors = encode_now(embedder, questions_of(entries))
            assert vectors is not None  # a SyncEncoder always encodes
            return FaqIndex.of(entries, vectors)

        index = context.resources.cached(key, embed)
    model_info = replace(info, provider="local")
    return RetrieverModel(
        model_info,
        embedder,
        entries,
        index=index,
        top_k=spec.top_k,
        refuse_below=spec.refuse_below,
    )


def build_minilm(spec: MiniLMSpec, context: BuildContext, loc: Loc, info: ModelInfo) -> Embedder:
    """The MiniLM embedder; the ONNX session and its cache load once per process."""
    from modelyard.local.minilm import MODEL_ID, MiniLMEmbedder, MiniLMRuntime, default_files

    model_path, tokenizer_path = _at(context, loc, default_files)
    key = "minilm|" + _digest(str(model_path), spec.model_dump_json())
    runtime = _at(
        context,
        loc,
        lambda: context.resources.cached(
            key,
            lambda: MiniLMRuntime(
                model_path,
                tokenizer_path,
                threads=spec.threads,
                max_length=spec.max_length,
                batch_size=spec.batch_size,
                cache_size=spec.cache_size,
            ),
        ),
    )
    return MiniLMEmbedder(replace(info, provider="local", model_id=MODEL_ID), runtime)


LOCAL_BUILDERS[FakeSpec] = _build_fake
LOCAL_BUILDERS[CallableSpec] = _build_callable
LOCAL_EMBEDDER_BUILDERS[FakeEmbedderSpec] = _build_hashing
LOCAL_BUILDERS[LlamaCppSpec] = build_llama
LOCAL_BUILDERS[LangDetectSpec] = build_langdetect
LOCAL_BUILDERS[ClassifierSpec] = build_classifier
LOCAL_BUILDERS[RetrieverSpec] = build_retriever
LOCAL_EMBEDDER_BUILDERS[MiniLMSpec] = build_minilm
