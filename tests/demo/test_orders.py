"""The order-status specialist: finding order numbers, answering from the table, and saying
clearly when an order is unknown or no number was given."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import modelyard
from modelyard.demo.orders import OrderDesk, misshapen_number, order_numbers, read_orders
from modelyard.errors import ConfigError, NoAnswerError

from ..conftest import EXAMPLES

ORDERS = EXAMPLES / "data" / "acme" / "orders.csv"


@pytest.fixture(scope="module")
def desk() -> OrderDesk:
    return OrderDesk(read_orders(ORDERS))


@pytest.mark.parametrize(
    "text",
    [
        "Where is my order ORD-731842?",
        "where is ord 731842",
        "status of #731842 please",
        "Order no. 731842, any news?",
        "my order number is 731842",
    ],
)
def test_order_numbers_in_the_ways_customers_write_them(text: str) -> None:
    assert order_numbers(text) == ["ORD-731842"]


@pytest.mark.parametrize(
    "text",
    [
        "tracking 1Z999AA10123456784 says nothing",  # a tracking number is not an order
        "call me on +49 30 1234 5678",
        "I ordered 2 tents 3 days ago",
    ],
)
def test_other_numbers_are_not_order_numbers(text: str) -> None:
    assert order_numbers(text) == []
    assert misshapen_number(text) is None


def test_a_shipped_order_gets_carrier_tracking_and_date(desk: OrderDesk) -> None:
    answer = desk.answer("where is ORD-731842")
    assert answer.startswith("Order ORD-731842 (Ridge 40 backpack) shipped on 4 March with DHL")
    assert "should arrive by 7 March" in answer
    assert "JD014600003828" in answer


def test_a_delayed_order_says_why(desk: OrderDesk) -> None:
    answer = desk.answer("order 732845?")
    assert "is delayed with Canada Post" in answer
    assert "held by customs" in answer


def test_an_unknown_order_is_said_to_be_unknown(desk: OrderDesk) -> None:
    answer = desk.answer("Where is my order? The number is ORD-739999.")
    assert answer.startswith("I couldn't find order ORD-739999")


def test_a_number_of_the_wrong_shape_is_explained(desk: OrderDesk) -> None:
    answer = desk.answer("Can you check my delivery please, it's order 12345")
    assert "I couldn't find an order numbered 12345" in answer
    assert "ORD-731842 (6 digits" in answer


def test_no_number_at_all_raises_no_answer_so_the_fallback_moves_on(desk: OrderDesk) -> None:
    with pytest.raises(NoAnswerError) as caught:
        desk.answer("where is my package")
    assert caught.value.code == "no_order_number"
    assert not caught.value.retryable


def test_a_bad_row_is_named_by_its_line(tmp_path: Path) -> None:
    table = tmp_path / "orders.csv"
    table.write_text(
        "order_id,placed,status,items,carrier,tracking,shipped,eta\n"
        "ORD-100001,2025-03-01,shipped,Tent,DHL,1,2025-03-02,2025-03-04\n"
        "ORD-100002,2025-03-01,lost,Tent,DHL,1,2025-03-02,2025-03-04\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        read_orders(table)
    assert caught.value.line == 3
    assert "status 'lost' is not one of" in str(caught.value)


CALLABLE = """
models:
  order-desk:
    local:
      type: callable
      factory: modelyard.demo.orders:order_desk
      files: {{orders: {orders}}}
"""


async def test_the_factory_model_answers_from_the_file_named_in_the_config(
    write_config: Callable[[str], Path],
) -> None:
    async with modelyard.load(write_config(CALLABLE.format(orders=ORDERS))) as yard:
        response = await yard.complete("order-desk", "status of 732118?")
    assert "is out for delivery with UPS today" in response.text
    assert yard.models["order-desk"].describe()["function"] == "modelyard.demo.orders:order_desk"


def test_a_missing_file_is_named_at_load(write_config: Callable[[str], Path]) -> None:
    with pytest.raises(ConfigError) as caught:
        modelyard.load(write_config(CALLABLE.format(orders="nowhere.csv")))
    assert "models.order-desk.local.files.orders: file not found" in str(caught.value)
    assert caught.value.line == 7  # the files: line (the text starts with a newline)


def test_function_and_factory_together_are_refused(write_config: Callable[[str], Path]) -> None:
    text = CALLABLE.format(orders=ORDERS).replace(
        "type: callable", "type: callable\n      function: modelyard.demo.desk:human_handoff"
    )
    with pytest.raises(ConfigError) as caught:
        modelyard.load(write_config(text))
    assert "give either 'function'" in str(caught.value)


def test_a_factory_that_fails_is_named(write_config: Callable[[str], Path], tmp_path: Path) -> None:
    bad = tmp_path / "orders.csv"
    bad.write_text("order_id\nORD-1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        modelyard.load(write_config(CALLABLE.format(orders=bad)))
    assert "missing columns: placed, status" in str(caught.value)
