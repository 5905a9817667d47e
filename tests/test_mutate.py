"""tools/mutate.py, the mutation check: its list still fits the code, and the tool itself works.

The list test runs no tests (it only reads files), so it is fast and runs in CI: when
the core moves, it names the mutants to update. The tool is checked on a tiny module
and a trivial test in a temporary folder: a mutant is applied, judged killed or
survived, and the file is put back byte for byte, also when the run fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import mutate  # noqa: E402
from mutants import MUTANTS, Mutant  # noqa: E402


# ---- the list ----------------------------------------------------------------------------
@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_every_mutant_still_matches_its_file_exactly_once(mutant):
    mutate.source_of(mutant, ROOT)  # raises MutantError naming the mutant otherwise
    assert mutant.tests and all((ROOT / t).is_file() for t in mutant.tests), mutant.tests
    assert mutant.why


def test_the_list_has_unique_names_and_covers_the_core():
    names = [m.name for m in MUTANTS]
    assert len(set(names)) == len(names)
    files = {m.file.removeprefix("minilora/").removesuffix(".py") for m in MUTANTS}
    for core in ("backend", "tensor", "broadcasting", "ops", "functional", "checks", "nn"):
        assert core in files
    for core in ("optim", "lora", "transformer", "gradcheck"):
        assert core in files
    for twin in ("fast/norms", "fast/attention", "fast/lora"):
        assert twin in files


def test_list_and_only_run_no_test(capsys):
    assert mutate.main(["--list"]) == 0
    assert f"{len(MUTANTS)} mutants, each found exactly once" in capsys.readouterr().out
    assert mutate.main(["--list", "--only", "softmax"]) == 0
    assert "softmax_without_max_shift" in capsys.readouterr().out
    assert mutate.main(["--list", "--only", "strict_load", "--only", "fused_*"]) == 0
    listed = capsys.readouterr().out
    assert "strict_load_ignores_unexpected" in listed and "fused_grad_x_ignores_dropout" in listed
    assert "4 mutants, each found exactly once" in listed
    assert mutate.main(["--only", "softmax", "--only", "no such mutant"]) == 2
    assert "matches no mutant" in capsys.readouterr().err


# ---- the tool, on a tiny module ------------------------------------------------------------
@pytest.fixture(autouse=True)
def bare_pytest(monkeypatch):
    """The tiny tests need no plugin: pytest without them starts in a second, not several."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


TINY_MODULE = "def double(x):\n    return 2 * x\n"
TINY_TEST = "from tiny import double\n\n\ndef test_double():\n    assert double(3) == 6\n"


def tiny(tmp_path, original="2 * x", mutated="3 * x", equivalent="") -> Mutant:
    (tmp_path / "tiny.py").write_text(TINY_MODULE)
    (tmp_path / "test_tiny.py").write_text(TINY_TEST)
    return Mutant("tiny", "tiny.py", ("test_tiny.py",), original, mutated, "why", equivalent)


def test_a_mutant_is_applied_judged_and_the_file_put_back(tmp_path):
    killer = tiny(tmp_path)
    path = tmp_path / "tiny.py"
    os.utime(path, (1_000_000_000, 1_000_000_000))  # an old mtime, as a committed file has
    before = path.stat().st_mtime_ns
    outcome, seconds, detail = mutate.run_mutant(killer, tmp_path, timeout=120)
    assert outcome == mutate.KILLED and "test_tiny.py::test_double" in detail and seconds > 0
    assert path.read_text() == TINY_MODULE and path.stat().st_mtime_ns == before

    harmless = Mutant("x2", "tiny.py", ("test_tiny.py",), "2 * x", "x * 2", "why")
    assert mutate.run_mutant(harmless, tmp_path, timeout=120)[0] == mutate.SURVIVED
    marked = Mutant("x2", "tiny.py", ("test_tiny.py",), "2 * x", "x * 2", "why", "same product")
    outcome, _, detail = mutate.run_mutant(marked, tmp_path, timeout=120)
    assert (outcome, detail) == (mutate.EQUIVALENT, "same product")
    assert path.read_text() == TINY_MODULE and path.stat().st_mtime_ns == before
    wrongly = Mutant("x3", "tiny.py", ("test_tiny.py",), "2 * x", "3 * x", "why", "not so")
    outcome, _, detail = mutate.run_mutant(wrongly, tmp_path, timeout=120)
    assert outcome == mutate.KILLED and detail.startswith("marked equivalent, yet FAILED")


def test_inside_the_block_the_file_holds_the_mutant_and_an_error_puts_it_back(tmp_path):
    mutant = tiny(tmp_path)
    path = tmp_path / "tiny.py"
    with pytest.raises(KeyboardInterrupt), mutate.applied(mutant, tmp_path):
        assert path.read_text() == TINY_MODULE.replace("2 * x", "3 * x")
        raise KeyboardInterrupt  # Ctrl-C while the tests run
    assert path.read_text() == TINY_MODULE


def test_the_file_is_put_back_when_the_test_run_itself_fails(tmp_path, monkeypatch):
    mutant = tiny(tmp_path)

    def broken(*args, **kwargs):
        raise OSError("pytest could not start")

    monkeypatch.setattr(mutate.subprocess, "run", broken)
    with pytest.raises(OSError, match="could not start"):
        mutate.run_mutant(mutant, tmp_path, timeout=120)
    assert (tmp_path / "tiny.py").read_text() == TINY_MODULE


def test_a_test_run_past_the_time_limit_is_a_timeout(tmp_path):
    mutant = tiny(tmp_path)
    slow = "import time\n\n\ndef test_slow():\n    time.sleep(60)\n"
    (tmp_path / "test_tiny.py").write_text(slow)
    assert mutate.run_mutant(mutant, tmp_path, timeout=2)[0] == mutate.TIMEOUT
    assert (tmp_path / "tiny.py").read_text() == TINY_MODULE


@pytest.mark.parametrize("original", ["4 * x", "x"])  # absent; twice ("def double(x)", "* x")
def test_an_original_text_not_found_exactly_once_is_refused(tmp_path, original):
    mutant = tiny(tmp_path, original=original)
    with pytest.raises(mutate.MutantError, match="occurs [02] times in tiny.py"):
        mutate.run_mutant(mutant, tmp_path, timeout=120)
    assert (tmp_path / "tiny.py").read_text() == TINY_MODULE


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_uncommitted_changes_are_found(tmp_path):
    tiny(tmp_path)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "tiny"]):
        subprocess.run(git + args, cwd=tmp_path, check=True)
    assert mutate.uncommitted(tmp_path, ["tiny.py"]) == []
    (tmp_path / "tiny.py").write_text(TINY_MODULE + "# an edit\n")
    assert mutate.uncommitted(tmp_path, ["tiny.py"]) == ["tiny.py"]
    assert mutate.uncommitted(tmp_path, ["test_tiny.py"]) == []
