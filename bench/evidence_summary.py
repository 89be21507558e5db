"""Print the figures of bench/evidence_pipeline.sh's calibrate reports as one table.

.venv/bin/python bench/evidence_summary.py bench/out/pipeline
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from modelyard.evaluation.frontier import cost_at_quality


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def strong_calls_saved(report: dict[str, Any]) -> float | None:
    """RouteLLM's measure: the share of calls to the strong model saved at the target quality,
    read off the test curve of the settings scored on the test split."""
    front = report["frontier"]
    strong, weak = front["strong"], front["weak"]
    singles = report["singles_test"]
    points = [
        (t["test"]["answered_by"].get(strong, 0) / t["test"]["n"], t["test"]["accuracy_scored"])
        for t in report["trials"]
        if "test" in t
    ]
    points += [(0.0, singles[weak]["accuracy_scored"]), (1.0, singles[strong]["accuracy_scored"])]
    share = cost_at_quality(points, front["target_fraction"] * singles[strong]["accuracy_scored"])
    return None if share is None else 1.0 - share


def held(report: dict[str, Any]) -> str:
    confidence = report.get("confidence")
    return "" if confidence is None else f", at {confidence:.0%} confidence"


def figures(report: dict[str, Any], strong: str | None = None) -> dict[str, Any]:
    """The chosen setting's test figures against the strong model alone (by default the most
    accurate one on the calibration split), and the AIQs."""
    front = report["frontier"]
    strong = strong or front["strong"]
    test = report["chosen"]["test"]
    alone = report["singles_test"][strong]
    return {
        "strong": strong,
        "quality": test["accuracy_scored"] / alone["accuracy_scored"],
        "cost": test["cost_per_item"] / alone["cost_per_item"],
        "strong_calls_saved": 1 - test["answered_by"].get(strong, 0) / test["n"],
        "aiq": {k: c["aiq"] for k, c in front["curves"].items()},
    }


def line(name: str, report: dict[str, Any]) -> str:
    front = report["frontier"]
    found = figures(report)
    strong = found["strong"]
    saved = front["saving_at_target"]
    aiq = {k: None if v is None else round(v, 3) for k, v in found["aiq"].items()}
    return (
        f"{name:18s} chosen {report['chosen']['values']} (met on calibration: {report['met']}"
        f"{held(report)}); "
        f"test: {pct(found['quality'])} of {strong} at {pct(found['cost'])} of its cost; "
        f"$ saved at {front['target_fraction']:.0%} of strong, test curve: "
        f"system {pct(saved['system'])} random {pct(saved['random'])} "
        f"oracle {pct(saved['oracle'])}; {strong} calls saved: test curve "
        f"{pct(strong_calls_saved(report))}, chosen setting {pct(found['strong_calls_saved'])}; "
        f"AIQ system+singles {aiq.get('system + singles')} "
        f"random {aiq['random']} oracle {aiq['oracle']}"
    )


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/out/pipeline")
    for path in sorted(out.glob("*.json")):
        text = path.read_text()
        if not text.strip():
            print(f"{path.stem:18s} (no report: the run failed)")
            continue
        print(line(path.stem, json.loads(text)))


if __name__ == "__main__":
    main()
