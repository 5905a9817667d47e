"""Correct solutions written differently from the reference get full marks (issue 27): each
part graded alone, as the grader grades a student's package (tests/alternatives.py)."""

from __future__ import annotations

import pytest
from alternatives import ALTERNATIVES
from grading import grade_changed

from minilora.teach import parts


@pytest.mark.parametrize(
    "part, file, changes", ALTERNATIVES, ids=[f"{a[0]}-{i}" for i, a in enumerate(ALTERNATIVES)]
)
def test_a_correct_alternative_gets_full_marks(tmp_path, part, file, changes):
    result = grade_changed(tmp_path, part, file, changes)
    failed = [c for c in result["checks"] if not c["passed"]]
    assert result["score"] == result["max"] and not failed, failed


def test_at_least_10_alternatives_and_every_part_has_a_contract():
    assert len(ALTERNATIVES) >= 10
    assert set(parts.CONTRACTS) == set(parts.PARTS)
    for part, contract in parts.CONTRACTS.items():
        assert set(contract) == {"defines", "relies", "autograd", "accepted", "limits"}, part
