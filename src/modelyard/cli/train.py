"""train: fit a learned cost-quality router (or a cascade's learned check) from recorded
outcomes and write its artifact."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Literal

import typer

from modelyard.cli.app import app, check_writable, console, fail, guarded
from modelyard.config.build import build_embedders
from modelyard.config.loader import load_config
from modelyard.patterns.artifact import save
from modelyard.patterns.signals import SIGNAL_SETS, signal_set
from modelyard.patterns.training import OutcomesError, read_outcomes, train_router
from modelyard.suggest import did_you_mean


@app.command()
def train(
    outcomes: Annotated[
        Path,
        typer.Argument(
            help="JSONL of recorded outcomes: prompt, model, correct or score, optional cost.",
            show_default=False,
        ),
    ],
    embedder: Annotated[
        str,
        typer.Option("--embedder", help="An embedder defined in the config.", show_default=False),
    ],
    config: Annotated[
        Path, typer.Option("--config", help="The YAML config that defines the embedder.")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the artifact (.npz).")
    ],
    models: Annotated[
        str | None,
        typer.Option(help="Comma-separated candidates to keep (default: every model recorded)."),
    ] = None,
    method: Annotated[
        str, typer.Option(help="auto (pick by held-out log-loss), logistic or knn.")
    ] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the held-out split.")] = 0,
    features: Annotated[
        str,
        typer.Option(
            help="prompt (a router's artifact) or answer (a cascade check's: prompt + response)."
        ),
    ] = "prompt",
    signals: Annotated[
        str | None,
        typer.Option(
            help="With --features answer: also read these answer signals (e.g. worked_math: "
            "is an answer stated, is its arithmetic right); known: " + ", ".join(SIGNAL_SETS) + ".",
            show_default=False,
        ),
    ] = None,
    folds: Annotated[
        int,
        typer.Option(
            help="Cross-fit: also store each training text's prediction from a fit on the other "
            "K folds' prompts, so `calibrate` may run on this same data without in-sample "
            "optimism (0: off).",
        ),
    ] = 0,
) -> None:
    """Fit P(success) per candidate and write the artifact a router (or a cascade check) uses."""
    if method not in ("auto", "logistic", "knn"):
        fail(f"--method must be auto, logistic or knn, not {method!r}")
    if features not in ("prompt", "answer"):
        fail(f"--features must be prompt or answer, not {features!r}")
    if folds == 1 or folds < 0:
        fail(f"--folds must be 0 (off) or at least 2, not {folds}")
    if signals is not None and features != "answer":
        fail("--signals reads answers: it needs --features answer")
    try:
        reads_signals = signal_set(signals) if signals is not None else None
    except ValueError as exc:
        fail(f"--signals: {exc}")
    check_writable(output, "the artifact", make_folder=True)  # as split makes its --out
    chosen: Literal["auto", "logistic", "knn"] = method  # type: ignore[assignment]
    reads: Literal["prompt", "answer"] = features  # type: ignore[assignment]

    def run() -> None:
        # Embedders only: the config may already name the artifact this run writes.
        embedders = build_embedders(load_config(config))
        if embedder not in embedders:
            hint = did_you_mean(embedder, sorted(embedders), listed="defined embedders")
            fail(f"no embedder {embedder!r} in {config}{hint}")
        wanted = [m.strip() for m in models.split(",") if m.strip()] if models else None
        try:
            rows = read_outcomes(outcomes, wanted, features=reads)
        except OutcomesError as exc:
            fail(str(exc))
        if folds > (prompts := len({r.prompt for r in rows})):
            fail(f"--folds {folds} is more than the {prompts} prompts in {outcomes}")
        artifact = asyncio.run(
            train_router(
                rows,
                embedders[embedder],
                method=chosen,
                features=reads,
                source=outcomes,
                seed=seed,
                folds=folds,
                signals=reads_signals,
            )
        )
        save(output, artifact)
        meta = artifact.meta
        console.print(
            f"[green]wrote[/] {output}: {artifact.meta.get('method', '')} over "
            f"{meta['prompts']} prompts x {len(artifact.models)} models "
            f"({', '.join(artifact.models)})"
        )
        if artifact.signals is not None:
            console.print(
                f"  reads {artifact.signals.name} answer signals beside the embedding: "
                f"{', '.join(artifact.signals.names)}"
            )
        if artifact.out_of_fold is not None:
            console.print(
                f"  cross-fitted: each of the {len(artifact.out_of_fold.predictions)} training "
                f"texts also has its prediction from the fit of the {folds - 1} folds without it"
            )
        for name, loss in sorted(meta["validation_log_loss"].items(), key=lambda kv: kv[1]):
            console.print(f"  held-out log-loss {loss:.4f}  {name}")

    guarded(run)
