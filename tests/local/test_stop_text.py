"""Stop sequences: text that may start one is held back, and nothing after a stop leaks out."""

from __future__ import annotations

from modelyard.local.llama_engine import _StopText
from modelyard.types import TokenLogprob


def feed(stop: _StopText, pieces: list[str]) -> tuple[str, bool]:
    out = []
    for piece in pieces:
        text, _, hit = stop.add(piece, None)
        out.append(text)
        if hit:
            return "".join(out), True
    rest, _ = stop.rest()
    return "".join(out) + rest, False


def test_text_without_stops_passes_through() -> None:
    assert feed(_StopText(()), ["Hel", "lo"]) == ("Hello", False)


def test_stop_split_across_tokens_is_cut() -> None:
    assert feed(_StopText(("END",)), ["one two E", "N", "D three"]) == ("one two ", True)


def test_partial_stop_is_held_back_until_it_cannot_match() -> None:
    stop = _StopText(("END",))
    assert stop.add("abc E", None)[0] == "abc "
    assert stop.add("N", None)[0] == ""
    assert stop.add("x", None)[0] == "ENx"


def test_a_partial_stop_at_the_end_is_released() -> None:
    assert feed(_StopText(("END",)), ["abc E"]) == ("abc E", False)


def test_earliest_of_several_stops_wins() -> None:
    assert feed(_StopText(("xyz", "b")), ["a b xyz"]) == ("a ", True)


def test_logprobs_follow_their_text() -> None:
    stop = _StopText(("##",))
    first = TokenLogprob(token="a", logprob=-0.1)
    second = TokenLogprob(token="#", logprob=-0.2)
    assert stop.add("a", first) == ("a", [first], False)
    assert stop.add("#", second) == ("", [], False)
    text, logprobs, hit = stop.add("#", TokenLogprob(token="#", logprob=-0.3))
    assert (text, logprobs, hit) == ("", [], True)
