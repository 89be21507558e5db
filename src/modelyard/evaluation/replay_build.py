"""Builds `type: replay` local models; registered in `config.build.LOCAL_BUILDERS`."""

from __future__ import annotations

from pathlib import Path

from modelyard.config.build import LOCAL_BUILDERS, BuildContext
from modelyard.config.loader import Loc
from modelyard.config.replay import ReplaySpec
from modelyard.errors import ConfigError
from modelyard.evaluation.formats import LIST_PRICES, load_recordings
from modelyard.evaluation.recordings import SHARED_PREFIX, Recordings, resolve_data_path
from modelyard.evaluation.replay import ReplayModel
from modelyard.model import Model, ModelInfo


def _paths(spec: ReplaySpec, context: BuildContext, loc: Loc) -> list[Path]:
    values = [spec.data] if isinstance(spec.data, str) else spec.data
    paths = []
    for i, value in enumerate(values):
        where = (*loc, "data") if isinstance(spec.data, str) else (*loc, "data", i)
        try:
            path = context.reads(resolve_data_path(value, context.loaded.base_dir, spec.data_root))
        except ConfigError as exc:
            raise context.error(where, exc.message) from None
        if not path.exists():
            # A relative path in a variable set on the command line reads as if from the
            # working directory; say where it was read from.
            relative = (
                not value.startswith(SHARED_PREFIX) and not Path(value).expanduser().is_absolute()
            )
            base = context.loaded.base_dir
            hint = (
                f" (a relative path is read from the config's folder, {base})" if relative else ""
            )
            raise context.error(where, f"recordings not found at {path}{hint}")
        paths.append(path)
    return paths


def _refuse_free_gaps(recordings: Recordings, model: str, context: BuildContext, loc: Loc) -> None:
    """ConfigError when `model` has no price and a recorded cost on some answers but not on
    others: those would be counted as free, though the recordings show the model is not."""
    answers = [i for i in recordings.items if model in i.outcomes]
    missing = [i for i in answers if i.outcomes[model].cost is None]
    if missing and len(missing) < len(answers):
        where = f" in {missing[0].meta['file']}" if "file" in missing[0].meta else ""
        raise context.error(
            (*loc, "model"),
            f"{model!r} has a recorded cost on {len(answers) - len(missing)} answers but none "
            f"on {len(missing)} (first: item {missing[0].id}{where}), and no price to estimate "
            "those from, so they would cost $0: record their costs or give the model a `price:`",
        )


def build_replay(spec: ReplaySpec, context: BuildContext, loc: Loc, info: ModelInfo) -> Model:
    """A ReplayModel over the (shared, loaded once) recordings the spec names."""
    paths = _paths(spec, context, loc)
    key = f"recordings|{spec.format}|{'|'.join(str(p.resolve()) for p in paths)}"
    try:
        recordings: Recordings = context.resources.cached(
            key, lambda: load_recordings(spec.format, paths)
        )
    except ConfigError as exc:
        raise context.error((*loc, "data"), str(exc)) from None
    if not recordings.items:
        raise context.error((*loc, "data"), f"the recordings at {recordings.source} hold no items")
    if spec.model not in recordings.models:
        raise context.error(
            (*loc, "model"),
            f"model {spec.model!r} is not in the recordings; present: "
            f"{', '.join(recordings.models)}",
        )
    price = None if not info.price.is_free else LIST_PRICES.get(spec.model)
    if price is None and context.loaded.config.models[info.name].price is None:
        _refuse_free_gaps(recordings, spec.model, context, loc)
    if spec.recorded_latency is not None and not any(
        (outcome := item.outcomes.get(spec.model)) is not None and outcome.latency_ms is not None
        for item in recordings.items
    ):
        raise context.error(
            (*loc, "recorded_latency"),
            f"the recordings at {recordings.source} give no latency for {spec.model!r} (the JSONL "
            "`latency_ms`; the RouterBench and RouteLLM files record none): drop "
            "recorded_latency, or use `latency:` seconds",
        )
    return ReplayModel(
        info,
        recordings,
        spec.model,
        price=price,
        latency=spec.latency,
        recorded_latency=spec.recorded_latency,
    )


LOCAL_BUILDERS[ReplaySpec] = build_replay
