"""Secrets written into the config file itself rather than given through `${VAR}`."""

from __future__ import annotations

from modelyard.config.loader import MISSING_ENV, LoadedConfig


def inline_key_warnings(loaded: LoadedConfig) -> list[str]:
    """A warning for each provider's `api_key` written in the file: the file's text is copied
    whole wherever a config is kept (the versions `gate --apply`, `calibrate --write` and
    `rollback` record, a calibrated config, backups), and the key with it."""
    warnings = []
    for name, provider in loaded.config.providers.items():
        key = provider.api_key.get_secret_value() if provider.api_key is not None else ""
        if not key or MISSING_ENV in key or key in loaded.from_env:
            continue
        loc = ("providers", name, "api_key")
        line = loaded.line(loc)
        where = f"{loaded.path.name}:{line}" if line is not None else loaded.path.name
        variable = loaded.env_defaults.get(loc)
        # A `${VAR:-key}` is already a variable: the key in the file is its default.
        what, fix = (
            (f"the default of ${{{variable}:-...}}", f"drop the default: ${{{variable}}}")
            if variable is not None
            else ("written in the file", "give it as ${VAR}")
        )
        warnings.append(
            f"provider {name!r}: its api_key is {what} ({where}), so every copy of the file "
            "holds it (the config history of gate --apply and rollback, calibrated configs, "
            f"backups); {fix}"
        )
    return warnings
