"""The OpenAI Responses API's output, as the gateway writes it: a ChatResponse as a `response`
object, and a stream's chunks as the Responses streaming events (each output item added, its
deltas, done, then the response completed or incomplete). `responses_api` reads the requests."""

from __future__ import annotations

from typing import Any

import orjson

from modelyard.errors import BadResponseError
from modelyard.gateway.errors import ApiError
from modelyard.gateway.openai_render import logprob_items
from modelyard.types import ChatResponse, Chunk, FinishReason, TokenLogprob, ToolCall

_INCOMPLETE = {
    FinishReason.LENGTH: "max_output_tokens",
    FinishReason.CONTENT_FILTER: "content_filter",
}


def _usage(response: ChatResponse) -> dict[str, Any]:
    usage = response.usage
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def _message_item(
    item_id: str,
    text: str,
    *,
    refused: bool,
    done: bool,
    logprobs: tuple[TokenLogprob, ...] | None = None,
) -> dict[str, Any]:
    part: dict[str, Any] = (
        {"type": "refusal", "refusal": text}
        if refused
        else {"type": "output_text", "text": text, "annotations": []}
    )
    if logprobs is not None and not refused:
        part["logprobs"] = logprob_items(logprobs)
    return {
        "type": "message",
        "id": item_id,
        "status": "completed" if done else "in_progress",
        "role": "assistant",
        "content": [part] if done else [],
    }


def _call_item(item_id: str, call: ToolCall, *, done: bool) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "status": "completed" if done else "in_progress",
    }


class ResponseShape:
    """The `response` object of one request, as each stage of it is written out."""

    def __init__(
        self,
        *,
        request_id: str,
        target: str,
        created: int,
        echo: dict[str, Any],
        logprobs: bool = False,
    ):
        self.id = f"resp_{request_id}"
        self.item_prefix = request_id
        self._head = {"id": self.id, "object": "response", "created_at": created, "model": target}
        self._echo = echo
        self.logprobs = logprobs
        """Whether the answer's logprobs were asked for (they go in its text part)."""

    def render(self, output: list[dict[str, Any]], response: ChatResponse | None) -> dict[str, Any]:
        """The object with these output items; in progress until `response` has ended it."""
        status, incomplete = "in_progress", None
        if response is not None:
            # A refusal is a whole answer (its content part says so); a filter's cut is not.
            reason = None if _refused(response) else _INCOMPLETE.get(response.finish_reason)
            status = "completed" if reason is None else "incomplete"
            incomplete = None if reason is None else {"reason": reason}
        return {
            **self._head,
            "status": status,
            "error": None,
            "incomplete_details": incomplete,
            "output": output,
            "usage": None if response is None else _usage(response),
            **self._echo,
        }

    def failed(self, output: list[dict[str, Any]], error: ApiError) -> dict[str, Any]:
        """The object of a response that broke after it began: what was sent, and why it
        stopped (no usage: the model's was never reported). The API's error codes are a closed
        list, so ours goes in the message."""
        code = "rate_limit_exceeded" if error.status == 429 else "server_error"
        shown = {"code": code, "message": f"{error.message} ({error.code})"}
        return {**self.render(output, None), "status": "failed", "error": shown}

    def output(self, response: ChatResponse) -> list[dict[str, Any]]:
        """A whole answer's output items: its text (unless it only called tools), then its
        calls."""
        message = response.message
        items: list[dict[str, Any]] = []
        if message.text or not message.tool_calls:
            items.append(
                _message_item(
                    f"msg_{self.item_prefix}",
                    message.text,
                    refused=_refused(response),
                    done=True,
                    logprobs=response.choices[0].logprobs if response.choices else None,
                )
            )
        for i, call in enumerate(message.tool_calls):
            items.append(_call_item(f"fc_{self.item_prefix}_{i}", call, done=True))
        if items and _cut(response):
            items[-1]["status"] = "incomplete"
        return items


def _refused(response: ChatResponse) -> bool:
    return bool(response.choices) and response.choices[0].refusal


def _cut(response: ChatResponse) -> bool:
    """Whether the answer was cut short (a length limit, a filter): its last item is then
    incomplete, as the response is."""
    return response.finish_reason in _INCOMPLETE and not _refused(response)


def render_response(
    response: ChatResponse, *, request_id: str, target: str, echo: dict[str, Any]
) -> bytes:
    """A ChatResponse as a Responses `response` object (its first choice)."""
    shape = ResponseShape(request_id=request_id, target=target, created=response.created, echo=echo)
    return orjson.dumps(shape.render(shape.output(response), response))


class EventRenderer:
    """Renders one stream's chunks as the Responses streaming events: the response created,
    then each output item in turn (added, its deltas, done: OpenAI ends one before it adds the
    next), then the response completed (or incomplete)."""

    def __init__(self, shape: ResponseShape) -> None:
        self._shape = shape
        self._sequence = 0
        self._started = False
        self._items: list[dict[str, Any]] = []
        """Every output item so far, as the final response object lists them."""
        self._open: int | None = None
        """The output index of the item still streaming, if any."""
        self._text: list[str] = []
        """The open message item's text so far."""
        self._refusing = False
        """Whether the open message item is a refusal (its text streams as one)."""
        self._logprobs: list[TokenLogprob] = []
        """The open message item's token logprobs so far (when asked for)."""
        self._calls: dict[int, int] = {}
        """Each tool call's stream index → its output index."""

    def _event(self, kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._sequence, **data}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _start(self) -> bytes:
        self._started = True
        response = self._shape.render([], None)
        return self._event("response.created", response=response) + self._event(
            "response.in_progress", response=response
        )

    def chunk(self, chunk: Chunk) -> bytes:
        """The events for one chunk (only the first choice exists in this API)."""
        out = b"" if self._started else self._start()
        if chunk.response is not None:
            return out + self._finish(chunk.response)
        if chunk.index != 0:
            return out
        if chunk.text:
            out += self._add_text(chunk.text, refusal=chunk.refusal, logprobs=chunk.logprobs)
        for delta in chunk.tool_calls:
            if delta.index not in self._calls:
                out += self._open_call(
                    delta.index, ToolCall(id=delta.id or "", name=delta.name or "", arguments="")
                )
            index = self._calls[delta.index]
            if index != self._open:
                raise BadResponseError(
                    f"the model's stream went back to tool call {delta.index} after it began "
                    "the next output, which the Responses API cannot stream"
                )
            if delta.arguments:
                self._items[index]["arguments"] += delta.arguments
                out += self._event(
                    "response.function_call_arguments.delta",
                    item_id=self._items[index]["id"],
                    output_index=index,
                    delta=delta.arguments,
                )
        return out

    def _add(self, item: dict[str, Any]) -> bytes:
        """Close the open item, then open `item` after it."""
        out = self._close()
        self._open = len(self._items)
        self._items.append(item)
        return out + self._event("response.output_item.added", output_index=self._open, item=item)

    def _open_call(self, stream_index: int, call: ToolCall) -> bytes:
        item_id = f"fc_{self._shape.item_prefix}_{len(self._calls)}"
        out = self._add(_call_item(item_id, call, done=False))
        self._calls[stream_index] = len(self._items) - 1
        return out

    def _add_text(
        self, text: str, *, refusal: bool, logprobs: tuple[TokenLogprob, ...] = ()
    ) -> bytes:
        out = b""
        if (
            self._open is None
            or self._items[self._open]["type"] != "message"
            or self._refusing != refusal
        ):
            out += self._open_message(refusal=refusal)
        self._text.append(text)
        self._logprobs.extend(logprobs)
        common = {"item_id": self._items[-1]["id"], "output_index": self._open, "content_index": 0}
        if refusal:
            return out + self._event("response.refusal.delta", **common, delta=text)
        tokens = logprob_items(logprobs)
        return out + self._event(
            "response.output_text.delta", **common, delta=text, logprobs=tokens
        )

    def _open_message(self, *, refusal: bool = False) -> bytes:
        index = len(self._items)
        suffix = "" if index == 0 else f"_{index}"
        item = _message_item(
            f"msg_{self._shape.item_prefix}{suffix}", "", refused=False, done=False
        )
        out = self._add(item)
        self._text, self._refusing, self._logprobs = [], refusal, []
        part = (
            {"type": "refusal", "refusal": ""}
            if refusal
            else {"type": "output_text", "text": "", "annotations": []}
        )
        return out + self._event(
            "response.content_part.added",
            item_id=item["id"],
            output_index=index,
            content_index=0,
            part=part,
        )

    def _close(self, *, cut: bool = False) -> bytes:
        """The events that end the open item (nothing when none is open); `cut`: the answer
        ended there, cut short, so the item is incomplete."""
        index, self._open = self._open, None
        if index is None:
            return b""
        item = self._items[index]
        status = "incomplete" if cut else "completed"
        if item["type"] == "function_call":
            item["status"] = status
            done = self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=item["arguments"],
            )
            return done + self._event("response.output_item.done", output_index=index, item=item)
        text = "".join(self._text)
        tokens = tuple(self._logprobs) if self._shape.logprobs else None
        item = _message_item(item["id"], text, refused=self._refusing, done=True, logprobs=tokens)
        item["status"] = status
        self._items[index] = item
        part = item["content"][0]
        common = {"item_id": item["id"], "output_index": index, "content_index": 0}
        done = (
            self._event("response.refusal.done", **common, refusal=text)
            if self._refusing
            else self._event(
                "response.output_text.done",
                **common,
                text=text,
                logprobs=logprob_items(tokens or ()),
            )
        )
        return (
            done
            + self._event("response.content_part.done", **common, part=part)
            + self._event("response.output_item.done", output_index=index, item=item)
        )

    def _finish(self, response: ChatResponse) -> bytes:
        # an empty answer is still one (empty) message
        out = b"" if self._items else self._open_message()
        out += self._close(cut=_cut(response))
        final = self._shape.render(self._items, response)
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        return out + self._event(kind, response=final)

    def error(self, error: ApiError) -> bytes:
        """What ends a broken stream: the open item closed as incomplete, then
        `response.failed` carrying the error, as OpenAI ends a response that fails midway (its
        terminal event, which clients wait for, where a bare `error` event left them without
        one)."""
        out = b"" if self._started else self._start()
        out += self._close(cut=True)
        return out + self._event("response.failed", response=self._shape.failed(self._items, error))
