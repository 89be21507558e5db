"""Is a model id pinned to one version, or an alias the provider may move? One heuristic per
model family, kept here so nothing else needs to know any vendor's naming.

- OpenAI (`gpt-*`, `o1`/`o3`/`o4`, `chatgpt-*`): pinned with a date (`-2024-08-06`) or a
  4-digit snapshot (`-0125`, `-1106-preview`); otherwise an alias (`gpt-4o`, `chatgpt-4o-latest`).
- Anthropic (`claude-*`): pinned with an 8-digit date (`-20241022`, `@20250929`);
  `claude-sonnet-4-5` and `-latest` are aliases.
- Google (`gemini-*`): `-latest` is an alias; 1.0/1.5/2.0 ids need a `-00N` version; later ids
  without `-latest` are stable names.
- Mistral (`mistral-*`, `codestral-*`, `ministral-*`, `pixtral-*`, `open-*`): pinned with a 4-digit
  `YYMM`; `-latest` is an alias.
- Anything else: only `latest` (`-latest`, `:latest`) is called an alias; unknown ids pass.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_LATEST = re.compile(r"(?i)[-:@/]latest$")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}|(?<!\d)20\d{6}(?!\d)")
_OPENAI_SNAPSHOT = re.compile(r"-(\d{4})(?:-preview)?$")
_GEMINI_VERSION = re.compile(r"-\d{3}$|-(?:preview|exp)-\d{2,4}(?:-\d{2})?$")
_GEMINI_OLD = re.compile(r"^gemini-(1\.0|1\.5|2\.0)")
_MISTRAL_SNAPSHOT = re.compile(r"-(\d{4})$")


def _bare(model_id: str) -> str:
    """The id without a `models/` or `provider/` prefix, lower-cased."""
    return model_id.rsplit("/", 1)[-1].lower()


def alias_reason(model_id: str) -> str | None:
    """Why `model_id` looks like a movable alias, or None when it looks pinned (or unknown)."""
    bare = _bare(model_id)
    if _LATEST.search(bare) or bare == "latest":
        return "an alias ending in 'latest', which the provider moves to new versions"
    if bare.startswith(("gpt-", "chatgpt-", "o1", "o3", "o4")):
        if _DATE.search(bare) or _OPENAI_SNAPSHOT.search(bare):
            return None
        return f"an OpenAI alias without a date (pin a snapshot: {bare}-YYYY-MM-DD)"
    if bare.startswith("claude-"):
        if _DATE.search(bare):
            return None
        return f"an Anthropic alias without a date (pin a version: {bare}-YYYYMMDD)"
    if bare.startswith("gemini-"):
        if _GEMINI_OLD.match(bare) and not _GEMINI_VERSION.search(bare):
            return f"a Gemini alias without a version (pin one: {bare}-00N)"
        return None
    if bare.startswith(("mistral-", "codestral-", "ministral-", "pixtral-", "open-mistral")):
        if _MISTRAL_SNAPSHOT.search(bare) or bare.startswith("open-"):
            return None
        return f"a Mistral alias without a version (pin one: {bare}-YYMM)"
    return None


def drift(pinned: str, reported: str) -> str | None:
    """What is wrong when a provider reports `reported` for a call to `pinned`, or None.

    An alias resolving to a dated id that starts with it is expected (and worth recording);
    a pinned id answered by a different id is drift.
    """
    want, got = _bare(pinned), _bare(reported)
    if not got or want == got:
        return None
    if alias_reason(pinned) is not None and got.startswith(want.removesuffix("-latest")):
        return None
    return f"pinned {pinned!r} but the provider reported {reported!r}"


def alias_warnings(ids: Mapping[str, str]) -> list[str]:
    """A warning for each configured model (name -> id) whose id looks like a movable alias."""
    return [
        f"model {name!r}: id {model_id!r} is {reason}; a pinned id keeps answers and prices "
        "from changing under you"
        for name, model_id in ids.items()
        if (reason := alias_reason(model_id)) is not None
    ]
