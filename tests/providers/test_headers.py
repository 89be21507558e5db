"""Reading rate-limit and retry headers: OpenAI's Go-style reset durations."""

from __future__ import annotations

import pytest

from modelyard.providers.headers import openai_rate_limits, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("6m0s", 360.0),
        ("2m52.8s", 172.8),
        ("1h0m0s", 3600.0),
        ("33.023s", 33.023),
        ("547ms", 0.547),
        ("8.64ms", 0.00864),
        ("750µs", 0.00075),
        ("0s", 0.0),
        ("1.5", 1.5),
    ],
)
def test_reset_durations_in_go_format_are_read(value: str, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "soon", "5 minutes", "1x"])
def test_what_is_not_a_duration_is_none(value: str) -> None:
    assert parse_duration(value) is None


def test_a_sub_millisecond_reset_is_a_reset_not_unknown() -> None:
    limits = openai_rate_limits(
        {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "2.5ms"}
    )
    assert limits.reset_tokens_s == pytest.approx(0.0025)
