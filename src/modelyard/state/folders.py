"""Folders for what a deployment keeps on disk."""

from __future__ import annotations

from pathlib import Path

PRIVATE = 0o700
"""Keys, spend, the request log (which quotes prompts) and config history: this user only."""


def private_folder(folder: Path) -> None:
    """Create `folder` (and its parents) readable by this user only; one that exists keeps
    its mode."""
    folder.mkdir(mode=PRIVATE, parents=True, exist_ok=True)
