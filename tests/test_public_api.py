"""The public entry module exports exactly what it documents."""

from __future__ import annotations

import modelyard


def test_all_names_exist_and_are_sorted() -> None:
    for name in modelyard.__all__:
        assert hasattr(modelyard, name), name
    assert list(modelyard.__all__) == sorted(modelyard.__all__)


def test_every_public_item_has_a_docstring() -> None:
    for name in modelyard.__all__:
        item = getattr(modelyard, name)
        if callable(item):
            assert item.__doc__, f"{name} has no docstring"


def test_nothing_public_outside_all_except_submodules() -> None:
    import inspect

    stray = {
        name
        for name in dir(modelyard)
        if not name.startswith("_")
        and name not in modelyard.__all__
        and not inspect.ismodule(getattr(modelyard, name))
    }
    assert stray == set()
