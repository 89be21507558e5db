"""Reading examples and knowledge bases: every bad row is an error naming its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.errors import ConfigError
from modelyard.local.datasets import group_examples, read_examples, read_faq


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_examples_are_read_in_order(tmp_path: Path) -> None:
    path = write(
        tmp_path, "ex.jsonl", '{"text": "hi", "label": "greet"}\n\n{"text": "bye", "label": "go"}\n'
    )
    assert read_examples(path) == [("hi", "greet"), ("bye", "go")]


def test_csv_examples_use_the_text_and_label_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "ex.csv", 'id,text,label\n1,"hello, you",greet\n2,bye,go\n')
    assert group_examples(read_examples(path)) == {"greet": ["hello, you"], "go": ["bye"]}


def test_csv_without_a_label_column_names_the_line_and_the_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "ex.csv", "text,category\nhello,greet\n")
    with pytest.raises(ConfigError) as caught:
        read_examples(path)
    assert caught.value.line == 2
    assert "'label'" in str(caught.value)
    assert "category" in str(caught.value)


def test_jsonl_row_without_text_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "ex.jsonl", '{"text": "a", "label": "x"}\n{"label": "y"}\n')
    with pytest.raises(ConfigError) as caught:
        read_examples(path)
    assert caught.value.line == 2
    assert str(caught.value).startswith(f"{path}:2:")


def test_invalid_json_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "ex.jsonl", '{"text": "a", "label": "x"}\n{oops\n')
    with pytest.raises(ConfigError, match="invalid JSON") as caught:
        read_examples(path)
    assert caught.value.line == 2


def test_empty_examples_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no examples"):
        read_examples(write(tmp_path, "ex.jsonl", "\n"))


def test_unknown_file_type_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\.jsonl or \.csv"):
        read_examples(write(tmp_path, "ex.txt", "hello"))


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        read_examples(tmp_path / "absent.jsonl")


def test_faq_accepts_a_question_or_a_list_of_paraphrases(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "kb.jsonl",
        '{"id": "a", "question": "Q1?", "answer": "A1"}\n'
        '{"question": ["Q2?", "Q2 again?"], "answer": "A2"}\n',
    )
    first, second = read_faq(path)
    assert (first.id, first.questions, first.answer) == ("a", ("Q1?",), "A1")
    assert (second.id, second.questions) == ("line-2", ("Q2?", "Q2 again?"))


def test_faq_without_an_answer_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "kb.jsonl", '{"question": "Q?", "answer": "A"}\n{"question": "Q2?"}\n')
    with pytest.raises(ConfigError, match="'answer'") as caught:
        read_faq(path)
    assert caught.value.line == 2


def test_faq_duplicate_ids_are_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "kb.jsonl",
        '{"id": "x", "question": "Q?", "answer": "A"}\n'
        '{"id": "x", "question": "R?", "answer": "B"}\n',
    )
    with pytest.raises(ConfigError, match="already used on line 1"):
        read_faq(path)


def test_faq_with_an_empty_question_list_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "kb.jsonl", '{"question": [], "answer": "A"}\n')
    with pytest.raises(ConfigError, match="'question'"):
        read_faq(path)
