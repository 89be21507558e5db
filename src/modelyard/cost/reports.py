"""What `modelyard costs` shows: spend by system, model, key, tag and day from the ledger, cost per
item, budget status from the state store, recent alerts, and — given evaluation results — cost
per accuracy point.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from modelyard.cost.budget_book import BudgetBook
from modelyard.cost.budget_counters import Budget
from modelyard.cost.ledger import LedgerFile
from modelyard.errors import ConfigError
from modelyard.state.memory import MemoryStore


@dataclass(frozen=True, slots=True, kw_only=True)
class SpendLine:
    """Spend of one group (a system, a model, a key, a tag or a day)."""

    name: str
    requests: int
    cost: float
    saved: float = 0.0
    errors: int = 0
    refused: int = 0
    """By model: the calls the gateway refused before they left (its client-side rate limit;
    `(none)`: requests a budget refused), not among its `requests`. Else: the requests of which
    no call left (they are among its `requests`)."""

    @property
    def per_item(self) -> float:
        """USD per request."""
        return self.cost / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetLine:
    """A budget's standing in its current window."""

    budget: Budget
    subject: str
    window: str
    spent: float
    reserved: float
    source: str
    """`state` (the live counters) or `ledger` (when the state lives in another process)."""


def _since(days: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days - 1)).strftime("%Y-%m-%d")


_GROUPS = {
    "system": "system",
    "model": "model",
    "key": "COALESCE(key_id, '(none)')",
    "day": "day",
}


async def spend_by(file: LedgerFile, group: str, *, days: int) -> list[SpendLine]:
    """Spend grouped by `system`, `model`, `key`, `tag` or `day` over the last `days` days.

    A call the gateway refused before it left (`refused` rows) is no request of its model:
    by model it is counted apart (`SpendLine.refused`); by anything else a request is one
    however it ended, and those of which no call left are also counted as refused."""
    since = _since(days)
    if group == "model":
        counted = (
            "SUM(1 - refused), SUM(cost), SUM(saved),"
            " COUNT(DISTINCT CASE WHEN error IS NOT NULL AND refused = 0 THEN request_id END),"
            " SUM(refused)"
        )
    else:
        counted = (
            "COUNT(DISTINCT request_id), SUM(cost), SUM(saved),"
            " COUNT(DISTINCT CASE WHEN error IS NOT NULL THEN request_id END),"
            " COUNT(DISTINCT request_id) - COUNT(DISTINCT CASE WHEN refused = 0 THEN request_id"
            " END)"
        )
    if group == "tag":
        rows = await file.query(
            f"SELECT t.value, {counted} FROM spend, json_each(spend.tags) AS t WHERE day >= ?"
            " GROUP BY t.value ORDER BY SUM(cost) DESC",
            (since,),
        )
    else:
        column = _GROUPS[group]
        order = "day" if group == "day" else "SUM(cost) DESC"
        rows = await file.query(
            f"SELECT {column}, {counted} FROM spend WHERE day >= ? GROUP BY {column}"
            f" ORDER BY {order}",
            (since,),
        )
    return [
        SpendLine(
            name=str(r[0]),
            requests=int(r[1]),
            cost=r[2] or 0.0,
            saved=r[3] or 0.0,
            errors=int(r[4]),
            refused=int(r[5]),
        )
        for r in rows
    ]


async def recent_alerts(file: LedgerFile, *, limit: int = 20) -> list[tuple[Any, ...]]:
    """The latest alerts: (at, kind, where, message)."""
    return await file.query(
        "SELECT at, kind, place, message FROM alerts ORDER BY at DESC LIMIT ?", (limit,)
    )


async def _subjects(budget: Budget, file: LedgerFile | None) -> list[str]:
    if budget.scope == "total":
        return ["all"]
    if budget.selector != "*":
        return [str(budget.selector)]
    if file is None:
        return []
    sql = {
        "model": "SELECT DISTINCT model FROM spend",
        "system": "SELECT DISTINCT system FROM spend",
        "key": "SELECT DISTINCT key_id FROM spend WHERE key_id IS NOT NULL",
        "tag": "SELECT DISTINCT t.value FROM spend, json_each(spend.tags) AS t",
    }[budget.scope]
    return [str(r[0]) for r in await file.query(sql)]


async def _ledger_spend(file: LedgerFile, budget: Budget, subject: str, since: float) -> float:
    where = {
        "total": ("1 = 1", ()),
        "model": ("model = ?", (subject,)),
        "system": ("system = ?", (subject,)),
        "key": ("key_id = ?", (subject,)),
        "tag": ("EXISTS (SELECT 1 FROM json_each(spend.tags) t WHERE t.value = ?)", (subject,)),
    }[budget.scope]
    rows = await file.query(
        f"SELECT SUM(cost) FROM spend WHERE at >= ? AND {where[0]}", (since, *where[1])
    )
    return float(rows[0][0] or 0.0)


async def budget_lines(
    book: BudgetBook, budgets: Sequence[Budget], file: LedgerFile | None
) -> list[BudgetLine]:
    """Each budget's spent and reserved amounts in its current window, per subject."""
    lines = []
    live = not isinstance(book.store, MemoryStore)
    for budget in budgets:
        for subject in await _subjects(budget, file):
            status = await book.status(budget, subject)
            if status is None:
                continue
            spent, source = status.spent, "state"
            if not live and file is not None:
                started = book.clock().timestamp() - _elapsed(budget, status.hold.period.ends_in)
                spent, source = await _ledger_spend(file, budget, subject, started), "ledger"
            lines.append(
                BudgetLine(
                    budget=budget,
                    subject=subject,
                    window=f"{budget.window} {status.hold.period.id}",
                    spent=spent,
                    reserved=status.reserved,
                    source=source,
                )
            )
    return lines


def _elapsed(budget: Budget, ends_in: float) -> float:
    """Seconds since the start of the budget's current window."""
    if budget.window == "fixed":
        assert budget.start is not None and budget.end is not None
        return (budget.end - budget.start).total_seconds() - ends_in
    length = {"minute": 60, "hour": 3600, "day": 86400}.get(budget.window)
    if length is not None:
        return length - ends_in
    now = datetime.now(UTC)
    return (now - now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)).total_seconds()


def load_accuracy(path: str | Path) -> dict[str, float]:
    """Accuracy per system from an evaluation results file (JSON).

    Accepted shapes: what `modelyard eval --json` and `compare --json` write, or
    `{"systems": {"name": {"accuracy": 0.9}}}`, `[{"system": "name", "accuracy": 0.9}, ...]`,
    `{"name": 0.9}`; accuracy is a fraction in [0, 1]. Anything else is a ConfigError.
    """
    where = str(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read evaluation results: {exc}", path=where) from None
    if isinstance(data, Mapping) and isinstance(data.get("report"), Mapping):
        data = [data["report"]]  # eval --json: {"report": {...}, "items": [...]}
    if isinstance(data, Mapping) and isinstance(data.get("systems"), Mapping):
        data = data["systems"]
    out: dict[str, float] = {}
    try:
        if isinstance(data, list):
            for item in data:  # compare --json names each row `name`
                out[str(item.get("system", item.get("name")))] = _fraction(item["accuracy"])
        elif isinstance(data, Mapping):
            for name, value in data.items():
                accuracy = value["accuracy"] if isinstance(value, Mapping) else value
                out[str(name)] = _fraction(accuracy)
        else:
            raise TypeError
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ConfigError(
            "not evaluation results: expected the output of `modelyard eval --json` or"
            ' `compare --json`, or {"system name": accuracy}',
            path=where,
        ) from None
    return out


def _fraction(value: Any) -> float:
    accuracy = float(value)
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(accuracy)
    return accuracy


def cost_per_accuracy_point(per_item: float, accuracy: float) -> float | None:
    """USD per request per percentage point of accuracy (None at zero accuracy)."""
    return per_item / (accuracy * 100) if accuracy > 0 else None
