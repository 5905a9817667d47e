"""The manipulation check of the two-base test (minilora.paper.manipulation)."""

from __future__ import annotations

import numpy as np
import pytest

from minilora.paper import manipulation
from minilora.work.pretrained import PRETRAINED


def test_the_character_frequency_model_is_add_one_smoothed_counts():
    logp = manipulation.unigram([np.array([0, 0, 1]), np.array([0])], vocab_size=3)
    # counts 3, 1, 0 plus one each: 4, 2, 1 over 7
    np.testing.assert_allclose(np.exp(logp), [4 / 7, 2 / 7, 1 / 7])


def test_the_committed_check_applies_its_rule_to_its_own_numbers():
    record = manipulation.recorded()
    if record is None:
        pytest.fail("minilora/paper/records/manipulation/manipulation.json is missing")
    assert record["pass_ratio"] == manipulation.PASS_RATIO
    measured = {(c["base"], c["task"]) for c in record["checks"]}
    assert measured >= {(b, t) for b in ("char-small", "char-small-mixed") for t in ("sql", "nli")}
    assert {b for b, _ in measured} <= set(PRETRAINED)  # the third base once it is measured
    for c in record["checks"]:
        base, frequencies = c["answer"]
        assert c["passes"] == (base <= manipulation.PASS_RATIO * frequencies)
        assert 0 < base < 10 and 0 < frequencies < np.log(105)  # under a uniform guess
    lines = manipulation.table(record)
    assert sum(line.startswith("| char-small") for line in lines) == len(record["checks"])


def test_the_table_marks_the_pairs_not_measured_yet():
    check = {"base": "a", "task": "sql", "answer": [1.0, 4.0], "text": [2.0, 4.0], "passes": True}
    record = {"checks": [check], "date": "2026-12-08", "cpu": "x", "device": "cpu"}
    lines = manipulation.table(record, ("a", "b"), ("sql", "nli"))
    rows = [line for line in lines if line.startswith("| a |") or line.startswith("| b |")]
    assert rows[0] == "| a | sql | 1.00 | 4.00 | 2.00 | 4.00 | yes |"
    pairs = [r.split(" | ")[:2] for r in rows[1:]]
    assert pairs == [["| a", "nli"], ["| b", "sql"], ["| b", "nli"]]
    assert all(r.count("not yet measured") == 5 for r in rows[1:])
