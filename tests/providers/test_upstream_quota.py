"""The quota headers a watched request's provider replies carried, for the gateway to show."""

from __future__ import annotations

from modelyard.providers import upstream_quota
from modelyard.providers.upstream_quota import QuotaSeen

NOW = 1_800_000_000.0


def test_a_watched_request_keeps_the_quota_headers_of_every_reply_that_had_any() -> None:
    with upstream_quota.watching() as seen:
        upstream_quota.noted({"X-RateLimit-Remaining-Requests": "9", "content-type": "json"})
        upstream_quota.noted({"anthropic-ratelimit-tokens-remaining": "5", "request-id": "r1"})
        upstream_quota.noted({"content-type": "text/html"})  # a proxy's page: none to keep
    assert seen.headers == (
        ("x-ratelimit-remaining-requests", "9"),
        ("anthropic-ratelimit-tokens-remaining", "5"),
    )
    assert upstream_quota.CURRENT.get() is None  # the watch ends with its block


def test_a_reply_outside_any_watch_is_not_kept() -> None:
    upstream_quota.noted({"x-ratelimit-remaining-requests": "9"})
    assert upstream_quota.CURRENT.get() is None


def openai(limit: str, remaining: str, reset: str) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": limit,
        "x-ratelimit-remaining-requests": remaining,
        "x-ratelimit-reset-requests": reset,
    }


def test_the_lowest_remaining_is_shown_with_its_own_limit_and_the_earliest_reset() -> None:
    seen = QuotaSeen()
    seen.note(openai("500", "40", "2s"), NOW)
    seen.note(openai("10000", "9000", "6m0s"), NOW + 0.1)
    seen.note(openai("100", "70", "1s"), NOW + 0.2)  # resets first, has more left than 40
    assert dict(seen.headers) == {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "40",
        "x-ratelimit-reset-requests": "1s",
    }


def test_requests_and_tokens_are_each_their_tightest() -> None:
    seen = QuotaSeen()
    seen.note({"x-ratelimit-remaining-requests": "5", "x-ratelimit-remaining-tokens": "900"}, NOW)
    seen.note({"x-ratelimit-remaining-requests": "8", "x-ratelimit-remaining-tokens": "300"}, NOW)
    assert dict(seen.headers) == {
        "x-ratelimit-remaining-requests": "5",
        "x-ratelimit-remaining-tokens": "300",
    }


def test_resets_given_as_instants_are_compared_as_instants() -> None:
    seen = QuotaSeen()
    seen.note({"anthropic-ratelimit-requests-reset": "2027-01-15T08:00:30Z"}, NOW)
    seen.note({"anthropic-ratelimit-requests-reset": "2027-01-15T08:00:05Z"}, NOW)
    seen.note({"anthropic-ratelimit-requests-reset": "2027-01-15T08:01:00Z"}, NOW)
    assert seen.headers == (("anthropic-ratelimit-requests-reset", "2027-01-15T08:00:05Z"),)


def test_a_reading_whose_reset_has_passed_gives_way_to_the_next_reply() -> None:
    """A 429 with nothing left, waited out, then an answer: the window refilled in between."""
    seen = QuotaSeen()
    seen.note(openai("500", "0", "1.5s"), NOW)
    seen.note(openai("500", "499", "120ms"), NOW + 2.0)
    assert dict(seen.headers)["x-ratelimit-remaining-requests"] == "499"


def test_a_header_of_no_kind_is_the_last_replys() -> None:
    seen = QuotaSeen()
    seen.note({"anthropic-ratelimit-unified-fallback-percentage": "0.5"}, NOW)
    seen.note({"anthropic-ratelimit-unified-fallback-percentage": "0.2"}, NOW)
    assert seen.headers == (("anthropic-ratelimit-unified-fallback-percentage", "0.2"),)


def unified(status: str, utilization: str, reset: float, claim: str) -> dict[str, str]:
    """What a Claude subscription's reply says of its 5-hour window, and overall."""
    return {
        "anthropic-ratelimit-unified-status": status,
        "anthropic-ratelimit-unified-reset": str(int(reset)),
        "anthropic-ratelimit-unified-representative-claim": claim,
        "anthropic-ratelimit-unified-5h-status": status,
        "anthropic-ratelimit-unified-5h-utilization": utilization,
        "anthropic-ratelimit-unified-5h-reset": str(int(reset)),
    }


def test_anthropic_unified_quota_shows_the_tightest_too() -> None:
    # They were the last reply's: a rejected account answered first read as "allowed".
    seen = QuotaSeen()
    seen.note(unified("allowed_warning", "0.91", NOW + 3600, "five_hour"), NOW)
    seen.note(unified("rejected", "0.40", NOW + 7200, "seven_day"), NOW + 0.1)
    seen.note(unified("allowed", "0.10", NOW + 600, "five_hour"), NOW + 0.2)
    assert dict(seen.headers) == {
        "anthropic-ratelimit-unified-status": "rejected",  # the most severe
        "anthropic-ratelimit-unified-representative-claim": "seven_day",  # with its status
        "anthropic-ratelimit-unified-reset": str(int(NOW + 600)),  # the earliest
        "anthropic-ratelimit-unified-5h-status": "rejected",
        "anthropic-ratelimit-unified-5h-utilization": "0.91",  # the most used
        "anthropic-ratelimit-unified-5h-reset": str(int(NOW + 600)),
    }


def test_an_unknown_unified_status_ranks_below_rejected_only() -> None:
    # Not one of the words known to allow: shown rather than hidden behind an "allowed".
    seen = QuotaSeen()
    for status in ("allowed", "throttled", "allowed_warning"):
        seen.note({"anthropic-ratelimit-unified-status": status}, NOW)
    assert seen.headers == (("anthropic-ratelimit-unified-status", "throttled"),)
    seen.note({"anthropic-ratelimit-unified-status": "rejected"}, NOW)
    seen.note({"anthropic-ratelimit-unified-status": "throttled"}, NOW)
    assert seen.headers == (("anthropic-ratelimit-unified-status", "rejected"),)
