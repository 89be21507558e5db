"""The order-status specialist of the quickstart: finds the order number in a ticket and answers
from the shop's orders table, with no model at all.

Order numbers look like `ORD-731842`; customers write them as `ORD-731842`, `ORD 731842`,
`#731842`, `order no. 731842` or just `731842`. A ticket with a number that is not in the table
gets a clear "not found" answer; a ticket that names an order with a number of the wrong shape
is told what the number looks like; a ticket with no number at all raises `NoAnswerError`, so
the fallback around this model hands it to a model that can ask for it.

In a config (the factory reads the table once, at load):

    order-desk:
      local:
        type: callable
        factory: modelyard.demo.orders:order_desk
        files: {orders: data/acme/orders.csv}
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from modelyard.errors import ConfigError, NoAnswerError
from modelyard.types import ChatRequest

PREFIX = "ORD-"
DIGITS = 6
STATUSES = (
    "processing",
    "shipped",
    "out_for_delivery",
    "delivered",
    "delayed",
    "cancelled",
    "returned",
)
COLUMNS = ("order_id", "placed", "status", "items", "carrier", "tracking", "shipped", "eta")

_NUMBER = re.compile(r"(?<![\d-])(?:ORD[-\s]?|#)?(\d{6})(?![\d-])", re.IGNORECASE)
_WRONG_SHAPE = re.compile(
    r"\b(?:order|ord)\b\s*(?:no\.?|nr\.?|number|num|#)?\s*[:#-]?\s*#?(\d{3,12})\b|#(\d{3,12})\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Order:
    """One row of the orders table."""

    order_id: str
    placed: date
    status: str
    items: str
    carrier: str = ""
    tracking: str = ""
    shipped: date | None = None
    eta: date | None = None
    delivered: date | None = None
    note: str = ""


def _day(value: str, column: str, path: Path, line: int) -> date | None:
    if not value.strip():
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(
            f"column {column!r}: {value!r} is not a date (YYYY-MM-DD)", path=str(path), line=line
        ) from None


def read_orders(path: Path) -> dict[str, Order]:
    """The orders of a CSV table by order id; ConfigError naming the line of a bad row."""
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the orders table: {exc.strerror}", path=str(path)) from None
    orders: dict[str, Order] = {}
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ConfigError(f"missing columns: {', '.join(missing)}", path=str(path), line=1)
        for row in reader:
            line = reader.line_num
            order_id = (row["order_id"] or "").strip().upper()
            if not re.fullmatch(rf"{PREFIX}\d{{{DIGITS}}}", order_id):
                raise ConfigError(
                    f"order_id {order_id!r} is not {PREFIX} and {DIGITS} digits",
                    path=str(path),
                    line=line,
                )
            status = (row["status"] or "").strip()
            if status not in STATUSES:
                raise ConfigError(
                    f"status {status!r} is not one of {', '.join(STATUSES)}",
                    path=str(path),
                    line=line,
                )
            placed = _day(row["placed"] or "", "placed", path, line)
            if placed is None:
                raise ConfigError("column 'placed' is empty", path=str(path), line=line)
            orders[order_id] = Order(
                order_id=order_id,
                placed=placed,
                status=status,
                items=(row["items"] or "").strip(),
                carrier=(row["carrier"] or "").strip(),
                tracking=(row["tracking"] or "").strip(),
                shipped=_day(row["shipped"] or "", "shipped", path, line),
                eta=_day(row["eta"] or "", "eta", path, line),
                delivered=_day(row.get("delivered") or "", "delivered", path, line),
                note=(row.get("note") or "").strip(),
            )
    if not orders:
        raise ConfigError("the orders table has no rows", path=str(path))
    return orders


def order_numbers(text: str) -> list[str]:
    """Every order number written in `text`, as `ORD-` ids, in order of appearance."""
    found = [PREFIX + m.group(1) for m in _NUMBER.finditer(text)]
    return list(dict.fromkeys(found))


def misshapen_number(text: str) -> str | None:
    """A number the customer calls an order number that has the wrong shape, if any."""
    for match in _WRONG_SHAPE.finditer(text):
        digits = match.group(1) or match.group(2)
        if digits and len(digits) != DIGITS:
            return digits
    return None


def _when(day: date | None) -> str:
    return f"{day.day} {day:%B}" if day is not None else "soon"


def describe_order(order: Order) -> str:
    """The answer for one order, in the words a support agent would use."""
    head = f"Order {order.order_id} ({order.items})"
    via = f" with {order.carrier}" if order.carrier else ""
    track = f" Tracking number: {order.tracking}." if order.tracking else ""
    note = f" Note: {order.note}." if order.note else ""
    status = order.status
    if status == "processing":
        text = f"{head} was placed on {_when(order.placed)} and is being packed; we expect it to "
        text += f"ship by {_when(order.eta)}."
    elif status == "shipped":
        text = f"{head} shipped on {_when(order.shipped)}{via} and should arrive by "
        text += f"{_when(order.eta)}.{track}"
    elif status == "out_for_delivery":
        text = f"{head} is out for delivery{via} today.{track}"
    elif status == "delivered":
        text = f"{head} was delivered on {_when(order.delivered)}{via}.{track}"
        text += " If you can't find it, reply and we'll open an investigation with the carrier."
    elif status == "delayed":
        text = f"{head} is delayed{via}; the new expected date is {_when(order.eta)}.{track}"
    elif status == "cancelled":
        text = f"{head} was cancelled, so it will not ship."
    else:
        text = f"{head} was returned to us."
    return text + note


class OrderDesk:
    """Answers order-status tickets from an orders table."""

    def __init__(self, orders: Mapping[str, Order]) -> None:
        self.orders = dict(orders)

    def answer(self, text: str) -> str:
        """The answer to a ticket; NoAnswerError when it names no order at all."""
        numbers = order_numbers(text)
        if not numbers:
            wrong = misshapen_number(text)
            if wrong is None:
                raise NoAnswerError(
                    "no order number in the message",
                    model="order-desk",
                    provider="local",
                    code="no_order_number",
                    retryable=False,
                )
            return (
                f"I couldn't find an order numbered {wrong}. Our order numbers look like "
                f"{PREFIX}731842 ({DIGITS} digits after {PREFIX}); you'll find yours in the "
                "order confirmation email. Could you check it and send it again?"
            )
        known = [self.orders[n] for n in numbers if n in self.orders]
        if not known:
            listed = ", ".join(numbers)
            return (
                f"I couldn't find order {listed} in our system. Please check the number in your "
                "order confirmation email, or reply with the email address you ordered with and "
                "we'll look it up for you."
            )
        return " ".join(describe_order(order) for order in known)

    def __call__(self, request: ChatRequest) -> str:
        return self.answer(request.last_user_text)


def order_desk(*, orders: Path) -> Callable[[ChatRequest], str]:
    """The order-status answering function over the orders table at `orders` (a factory for a
    `type: callable` model)."""
    return OrderDesk(read_orders(orders))
