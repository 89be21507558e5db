"""Load times, per-call latencies and generation speed of the local models.

    .venv/bin/python bench/local_models.py            # full run, about a minute
    .venv/bin/python bench/local_models.py --quick    # a few seconds, rough figures
    .venv/bin/python bench/local_models.py --threads 2

Run it on an idle machine: llama.cpp and onnxruntime figures swing widely when other processes
share the cores (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from modelyard.local.classifier import ClassifierModel, example_texts, train
from modelyard.local.datasets import FaqEntry
from modelyard.local.langdetect import LanguageDetector
from modelyard.local.llama import LlamaModel
from modelyard.local.llama_engine import LlamaEngine, Sampling, resolve_gguf
from modelyard.local.minilm import MiniLMEmbedder, MiniLMRuntime, default_files
from modelyard.local.retriever import FaqIndex, RetrieverModel, questions_of
from modelyard.model import ModelInfo
from modelyard.types import user

INTENTS = {
    "refund": ["I want my money back", "How long does a refund take?", "I was charged twice"],
    "password": ["I forgot my password", "I can't log in", "The reset email never came"],
    "shipping": ["Where is my package?", "My order has not arrived", "Track my shipment"],
}


def timed(function: Callable[[], object]) -> float:
    """Seconds one call of `function` takes."""
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def percentiles(samples: list[float]) -> str:
    """p50 / p95 of samples given in seconds, printed in milliseconds."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"p50 {statistics.median(ordered) * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms"


def sentences(count: int, tag: str) -> list[str]:
    """Distinct short sentences (distinct so the embedding cache never hits)."""
    return [
        f"{tag} sentence {i} about order {i * 7} and a delivery to city {i % 13}"
        for i in range(count)
    ]


async def bench_llama(threads: int, quick: bool) -> None:
    started = time.perf_counter()
    engine = LlamaEngine(resolve_gguf("smollm2", Path), n_ctx=2048, threads=threads)
    print(
        f"llama.cpp SmolLM2-135M Q4_1, {threads} thread(s): "
        f"load {time.perf_counter() - started:.2f} s"
    )
    info = ModelInfo(name="smollm2", kind="llama_cpp")
    model = LlamaModel(info, engine, sampling=Sampling(temperature=0.0))
    await model.complete(user("Warm up.", max_tokens=4))
    long_prompt = "Summarise this text. " + " ".join(
        f"Item {i} is on shelf {i % 9}." for i in range(40)
    )
    for label, prompt, tokens in (
        ("short prompt", "Explain what an API gateway does.", 128),
        ("long prompt", long_prompt, 64),
    ):
        runs = 1 if quick else 3
        for _ in range(runs):
            engine.llm.reset()  # no prefix reuse: measure the full prompt
            response = await model.complete(user(prompt, max_tokens=tokens))
            details = response.decision.details if response.decision else {}
            prompt_s = details.get("prompt_ms", 0) / 1000
            print(
                f"  {label}: {response.usage.input_tokens} prompt tokens read in "
                f"{prompt_s * 1000:.0f} ms "
                f"({response.usage.input_tokens / max(prompt_s, 1e-9):.0f} prompt tok/s), "
                f"{response.usage.output_tokens} tokens at {details.get('tokens_per_second')} tok/s"
            )
    chunks = 0
    started = time.perf_counter()
    first = None
    async for chunk in model.stream(user("Name three colors.", max_tokens=32)):
        if chunk.text and first is None:
            first = time.perf_counter() - started
        chunks += 1
    print(f"  stream: {chunks} chunks, first text after {(first or 0) * 1000:.0f} ms")
    engine.close()


async def bench_minilm(threads: int, quick: bool) -> MiniLMEmbedder:
    started = time.perf_counter()
    runtime = MiniLMRuntime(*default_files(), threads=threads)
    print(f"MiniLM int8 ONNX, {threads} thread(s): load {time.perf_counter() - started:.2f} s")
    embedder = MiniLMEmbedder(ModelInfo(name="minilm", kind="minilm"), runtime)
    embedder.encode(["warm up"])
    singles = [
        timed(lambda t=t: embedder.encode([t])) for t in sentences(20 if quick else 200, "single")
    ]
    print(f"  one uncached sentence per call: {percentiles(singles)}")
    cached = [timed(lambda: embedder.encode(["warm up"])) for _ in range(1000)]
    print(f"  cached sentence: {percentiles(cached)}")
    count = 200 if quick else 1000
    seconds = timed(lambda: embedder.encode(sentences(count, "batch")))
    print(
        f"  {count} sentences in batches of {runtime.batch_size}: "
        f"{seconds:.2f} s ({count / seconds:.0f}/s)"
    )
    return embedder


async def bench_classifier(embedder: MiniLMEmbedder, quick: bool) -> None:
    for method in ("centroid", "logistic"):
        started = time.perf_counter()
        trained = train(INTENTS, embedder.encode(example_texts(INTENTS)), method=method)
        fitted = time.perf_counter() - started
        model = ClassifierModel(
            ModelInfo(name="c", kind="classifier"),
            embedder,
            INTENTS,
            method=method,
            trained=trained,
        )
        texts = sentences(20 if quick else 200, f"classify {method}")
        calls = []
        for text in texts:
            started = time.perf_counter()
            await model.complete(user(text))
            calls.append(time.perf_counter() - started)
        print(
            f"classifier {method}: train {fitted * 1000:.0f} ms (9 examples), "
            f"complete() uncached {percentiles(calls)}"
        )


async def bench_retriever(embedder: MiniLMEmbedder, quick: bool) -> None:
    entries = [
        FaqEntry(id=str(i), questions=(q,), answer=f"answer {i}")
        for i, q in enumerate(sentences(500, "faq"))
    ]
    started = time.perf_counter()
    index = FaqIndex.of(entries, embedder.encode(questions_of(entries)))
    print(f"retriever: index 500 questions {time.perf_counter() - started:.2f} s")
    model = RetrieverModel(ModelInfo(name="faq", kind="retriever"), embedder, entries, index=index)
    calls = []
    for text in sentences(20 if quick else 200, "question"):
        started = time.perf_counter()
        await model.complete(user(text))
        calls.append(time.perf_counter() - started)
    print(f"  complete() uncached: {percentiles(calls)}")


def bench_langdetect(quick: bool) -> None:
    started = time.perf_counter()
    detector = LanguageDetector()
    print(f"fastText lid.176 lite: load {time.perf_counter() - started:.2f} s")
    texts = ["Where is my order?", "Où est ma commande ?", "Wo ist meine Bestellung?"] * (
        100 if quick else 1000
    )
    seconds = timed(lambda: [detector.detect(t, k=1) for t in texts])
    print(f"  {seconds / len(texts) * 1e6:.0f} µs per call")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    await bench_llama(args.threads, args.quick)
    embedder = await bench_minilm(args.threads, args.quick)
    await bench_classifier(embedder, args.quick)
    await bench_retriever(embedder, args.quick)
    bench_langdetect(args.quick)


if __name__ == "__main__":
    asyncio.run(main())
