"""Reloading the config when its file changes (a gateway's `gateway.watch_config`, a library
yard's `load(..., watch=True)`), and a refused config again when a file it named as missing
appears.

Both wait for what they read to hold still for `WATCH_SETTLE` seconds first: a writer that
pauses midway (scp, a program writing as it goes) leaves a part that may validate alone.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from modelyard.config.loader import text_version
from modelyard.live import FileStamp, LiveConfig, file_stamp

WATCH_SETTLE = 1.0
"""Seconds a watched file must stay unchanged before the config is reloaded."""

T = TypeVar("T")


async def held_still(probe: Callable[[], T]) -> T:
    """What `probe` says once it has said the same for `WATCH_SETTLE` seconds (or after 30
    tries: a file still changing after that is taken as it is)."""
    seen = probe()
    for _ in range(30):
        await asyncio.sleep(WATCH_SETTLE)
        again = probe()
        if again == seen:
            break
        seen = again
    return seen


def _stamps(files: Iterable[Path]) -> list[FileStamp]:
    return [file_stamp(path) for path in files]


class ConfigWatch:
    """Reloads `live` (`LiveConfig.try_reload`, which logs and survives a refusal) when its
    file changes, and when a file a refused reload named as missing (`LiveConfig.awaited`)
    appears or changes."""

    def __init__(self, live: LiveConfig) -> None:
        self.live = live

    async def run(self, *, catch_up: bool = False) -> None:
        """Watch until cancelled; `catch_up` first loads the file if it changed since the
        config serving was read (a library yard's watch starts with its first call)."""
        if catch_up and self._config_version() not in (None, self.live.current.version):
            await self.live.try_reload()
        await asyncio.gather(self._watch_file(), self._watch_awaited())

    async def _watch_file(self) -> None:
        from watchfiles import awatch

        # The folder is watched, not the file, and symlinks are not followed: editors, `sed -i`
        # and `mv` replace the file by a rename, and a Kubernetes ConfigMap swaps a `..data`
        # symlink and deletes the old target folder, after which a watch on the file (or on
        # where it pointed) is dead. Any change in the folder re-reads the file; only a new
        # text reloads, and a text refused once is not tried again: each refusal is logged, and
        # a log written beside the config (`serve cfg.yaml > serve.log`) would trigger the next.
        folder = self.live.path.absolute().parent
        # Only a refused text is remembered: one loaded once and then replaced (by a SIGHUP or
        # an admin reload too) is a new text again when the file returns to it.
        refused: list[str | None] = []
        while True:
            try:
                async for _ in awatch(folder, debounce=300, recursive=False):
                    # An editor that deletes and writes the file anew leaves it gone for a
                    # moment: that is not loaded either.
                    version = await held_still(self._config_version)
                    if version == self.live.current.version:
                        # Back to the text serving (say, after a refusal): tell, and a text
                        # refused before is news again when it comes back.
                        self.live.back_to_serving()
                        refused = []
                    elif version not in refused:
                        await self.live.try_reload()
                        refused = [] if self.live.current.version == version else [version]
            except Exception:
                self.live.log.exception("watching %s failed; watching again in 1 s", folder)
            await asyncio.sleep(1.0)

    async def _watch_awaited(self) -> None:
        """Polled, not watched: the files are few, only while a refusal waits for them, and
        may be in folders that do not exist yet (a folder of recordings still to be copied)."""
        while True:
            await asyncio.sleep(WATCH_SETTLE)
            awaited = self.live.awaited
            if not awaited or all(file_stamp(p) == seen for p, seen in awaited.items()):
                continue
            await held_still(functools.partial(_stamps, list(awaited)))
            # Not when a reload came first, nor when the file is back to the text serving.
            if self.live.awaited is awaited and self._config_version() != self.live.current.version:
                changed = [str(p) for p, seen in awaited.items() if file_stamp(p) != seen]
                self.live.log.warning(
                    "%s appeared or changed: loading the config again", ", ".join(changed)
                )
                await self.live.try_reload()

    def _config_version(self) -> str | None:
        try:
            return text_version(self.live.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            return None  # gone or unreadable: let the reload say why
