"""`module:function` names in config: what a user is told when the module cannot be imported."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.errors import ConfigError
from modelyard.providers.local_basic import import_function


def test_a_module_not_on_the_python_path_is_named_with_how_to_put_it_there() -> None:
    # The `modelyard` console script does not import from the config's folder or the working
    # directory, so a module beside the config is not found: the error says where to put it.
    with pytest.raises(ConfigError) as caught:
        import_function("nowhere_qa_x:answer")
    message = str(caught.value)
    assert "cannot import module 'nowhere_qa_x' for 'nowhere_qa_x:answer'" in message
    assert "PYTHONPATH" in message


def test_a_module_that_fails_to_import_names_its_own_missing_dependency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "needs_more_qa.py").write_text("import not_installed_qa_y\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        import_function("needs_more_qa:answer")
    message = str(caught.value)
    assert "No module named 'not_installed_qa_y'" in message
    assert "PYTHONPATH" not in message  # the module was found: the path is not what is wrong
