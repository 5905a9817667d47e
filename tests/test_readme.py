"""The README's Python examples run as written (a README that lies is worse than none)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_python_examples():
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_readme_example_runs(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(EXAMPLES[index], f"README example {index}", "exec"), namespace)
    if "loss" in namespace:  # every example that trains or differentiates ends with a loss
        assert namespace["loss"].item() == namespace["loss"].item()  # finite, not NaN


def test_readme_quotes_the_two_setup_commands():
    text = README.read_text()
    assert "pip install -e . && minilora demo" in text
    setup = 'pip install -e ".[test]" && '
    assert setup in text
    command = text.split(setup, 1)[1].splitlines()[0]
    assert command.startswith("python -m pytest")
    ci = (README.parent / ".ci" / "run").read_text()
    assert command in ci.splitlines()  # CI runs the README's test command, as written
