"""The quota headers a watched request's provider replies carried, for the gateway to show."""

from __future__ import annotations

from modelyard.providers import upstream_quota


def test_a_watched_request_keeps_the_quota_headers_of_the_last_reply_that_had_any() -> None:
    with upstream_quota.watching() as seen:
        upstream_quota.noted({"X-RateLimit-Remaining-Requests": "9", "content-type": "json"})
        upstream_quota.noted({"anthropic-ratelimit-tokens-remaining": "5", "request-id": "r1"})
        upstream_quota.noted({"content-type": "text/html"})  # a proxy's page: none to keep
    assert seen.headers == (("anthropic-ratelimit-tokens-remaining", "5"),)
    assert upstream_quota.CURRENT.get() is None  # the watch ends with its block


def test_a_reply_outside_any_watch_is_not_kept() -> None:
    upstream_quota.noted({"x-ratelimit-remaining-requests": "9"})
    assert upstream_quota.CURRENT.get() is None
