"""How a name that is not there is answered: the likely ones meant first, then every name there
is. One wording for every lookup by name (config references, the CLI, the gateway, drills), so
a typo reads the same wherever it is made. Imports nothing of modelyard, so any layer can use it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, known: Iterable[str], *, listed: str | None = "known") -> str:
    """What to say after `name` was not found among `known`, to append to the message that
    names it: `; did you mean 'front'? known: back, front` (the close matches, then every
    known name in the order given under the label `listed`, "none" when there is none). With
    `listed=None`, only the close matches ("" when none is close)."""
    names = list(dict.fromkeys(known))
    # A cut-short name ('front' for 'front-desk') and a case slip ('A' for 'a') are meant too,
    # though difflib's ratio can be too low to see them.
    folded = name.casefold()
    close = (
        difflib.get_close_matches(name, names, n=3)
        or [n for n in names if folded and n.casefold().startswith(folded)][:3]
    )
    parts = []
    if close:
        parts.append(f"did you mean {' or '.join(map(repr, close))}?")
    if listed is not None:
        parts.append(f"{listed}: {', '.join(names) or 'none'}")
    return "; " + " ".join(parts) if parts else ""


__all__ = ["did_you_mean"]
