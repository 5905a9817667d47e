"""`minilora demo` at its own recipe: its report, the adapter it saves, and that LoRA learns.

The run is the README's (1,200 steps, 200 test questions), because exact match part way
through training is not a stable quantity: at 600 steps the same seed scored 8, 7 and 2 of
50 as the rounding of the element-wise ops and of the BLAS threads changed (2026-11-29/30,
the last in CI): there the score is still climbing steeply, and another rounding moves a run
along that slope. At the end of the recipe the cosine schedule has brought the rate down
to zero and the score varies little: 0.505 (2026-11-24), 0.520 and 0.515 (2026-11-30, the
second after the fast paths' sums became products with ones) on 200 questions. The bound,
0.25, is more than six binomial standard errors (0.035) below those, so another rounding
does not cross it; a LoRA that learned little does (the base scores 0).
"""

import json

import pytest

from minilora.cli import main
from minilora.demo import run_demo
from minilora.interop.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS

MIN_EXACT_MATCH_AFTER = 0.25


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "adapter"
    lines = []
    result = run_demo(  # the demo's own recipe: DEMO_STEPS, DEMO_EVAL
        out=str(out),
        seed=0,
        progress=False,
        print_fn=lambda *a: lines.append(" ".join(map(str, a))),
    )
    return result, "\n".join(lines), out


def test_lora_raises_exact_match_well_above_the_base_model(demo_run):
    result, _, _ = demo_run
    assert result["exact_match_before"] <= 0.02  # the base model has never seen SQL
    assert result["exact_match_after"] >= MIN_EXACT_MATCH_AFTER


def test_demo_reports_what_trains_and_the_merge_difference(demo_run):
    result, report, _ = demo_run
    assert result["trainable"] == 2 * 4 * 2 * 128 * 8  # 2 x L_hat x d_model x r, L_hat = 8
    assert "trainable params: 16,384 || all params: 839,552" in report
    assert 0.0 < result["merge_max_abs_diff"] < 1e-3  # float32 rounding, not a different model
    assert "exact match: 0.000 ->" in report


def test_demo_saves_a_peft_adapter(demo_run):
    _, report, out = demo_run
    assert (out / ADAPTER_WEIGHTS).is_file()
    config = json.loads((out / ADAPTER_CONFIG).read_text())
    assert config["r"] == 8 and config["target_modules"] == ["q_proj", "v_proj"]
    assert str(out) in report


def test_demo_command_runs_end_to_end(tmp_path, capsys):
    main(["demo", "--steps", "5", "--eval", "4", "--out", str(tmp_path / "a"), "--quiet"])
    out = capsys.readouterr().out
    assert "base model exact match" in out and "demo finished" in out
