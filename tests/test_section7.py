"""Section 7 reproductions (Figures 3, 4 and Table 7) at the quick budget.

The quick budget trains four small adapters (r = 4, 8, 64 and a second seed at
64, 30 steps each) once for the whole module; the numbers are a smoke test of
the pipeline. The analysis functions themselves are proved in test_analysis.py.
"""

from __future__ import annotations

import dataclasses

import pytest

from minilora.paper import section7

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("section7")
    paths = {name: fn("quick", out, progress=False) for name, fn in section7.REPRODUCTIONS.items()}
    return out, paths


def _png_shape(path):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(path).shape


def test_reproductions_are_registered_under_the_cli_names():
    assert set(section7.REPRODUCTIONS) == {"figure3", "figure4", "table7"}


def test_figure3_writes_markdown_and_a_two_panel_heatmap(quick):
    out, paths = quick
    md = paths["figure3"]
    assert md == out / "figure3.md"
    text = md.read_text()
    assert "smoke test" in text  # the quick budget says what its numbers are worth
    assert "| dWq |" in text and "| dWv |" in text
    assert "![Figure 3](figure3.png)" in text
    assert text.count("- block ") == 4  # every block of char-small listed
    height, width, _ = _png_shape(out / "figure3.png")
    assert width > 2 * height  # two panels side by side


def test_figure4_has_both_matrices_and_the_random_pair(quick):
    out, paths = quick
    text = paths["figure4"].read_text()
    for row in ("| dWq seeds 0 / 1 |", "| dWv seeds 0 / 1 |", "| random / random |"):
        assert row in text
    assert "dWq shares more top directions than dWv" in text
    height, width, _ = _png_shape(out / "figure4.png")
    assert width > 3 * height  # three panels


def test_table7_has_both_ranks_measured_and_from_the_paper(quick):
    _, paths = quick
    lines = paths["table7"].read_text().splitlines()
    measured = [line for line in lines if line.startswith("| measured |")]
    paper = [line for line in lines if line.startswith("| paper (GPT-3 layer 48) |")]
    assert [line.split("|")[2].strip() for line in measured] == ["4", "64"]
    assert "| 0.32 | 21.67 | 0.02 |" in paper[0] and "| 1.90 | 37.71 | 0.33 |" in paper[1]
    for line in measured:  # dWq, Wq, random, expected, ||W||, ||dW||, factor: all numbers
        cells = [float(c) for c in line.split("|")[3:10]]
        assert all(c >= 0 for c in cells)
        assert cells[1] > cells[0]  # W's own top directions hold more of W than dW's


def test_the_three_share_the_cached_r64_run(quick):
    out, _ = quick
    entries = sorted(p.name for p in (out / "adapters").iterdir())
    assert len(entries) == 4, entries  # r4, r8, r64 seed 0 (shared), r64 seed 1
    assert not [e for e in entries if e.startswith(".")]  # no temporary directory left
    for e in entries:
        files = {p.name for p in (out / "adapters" / e).iterdir()}
        assert files == {"adapter_model.safetensors", "adapter_config.json", "run.json"}


def test_a_rerun_trains_nothing(quick, monkeypatch):
    out, _ = quick

    def no_training(*args, **kwargs):
        raise AssertionError("a re-run must load every adapter from the cache")

    monkeypatch.setattr(section7, "train_adapter", no_training)
    for name, fn in section7.REPRODUCTIONS.items():
        text = fn("quick", out, progress=False).read_text()
        assert "| loaded |" in text and "trained now" not in text, name


def test_cache_key_changes_with_every_setting():
    spec = section7._spec(section7.BUDGETS["quick"], 8)
    assert spec.key() == section7._spec(section7.BUDGETS["quick"], 8).key()
    changed = [dataclasses.replace(spec, **{f: v}) for f, v in
               [("r", 4), ("seed", 1), ("steps", 31), ("lr", 1e-3), ("alpha", 8.0),
                ("targets", ("q_proj",)), ("batch_size", 4), ("n_train", 10)]]  # fmt: skip
    keys = {c.key() for c in changed} | {spec.key()}
    assert len(keys) == len(changed) + 1


@pytest.mark.parametrize("name", ["figure3", "figure4", "table7"])
def test_unknown_budget_is_a_value_error_listing_the_valid_ones(name, tmp_path):
    with pytest.raises(ValueError, match="full.*quick"):
        section7.REPRODUCTIONS[name]("huge", tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []  # refused before any work
