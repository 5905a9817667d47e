"""Issue 27's mutation set: typical mistakes, one in one part each, beyond tests/mutations.py.

Each must lose points in its own part, graded alone (``grade_part``), with a message that
names its fault (the words given with it); at most 10% may leave the fault unnamed (words
None). The set covers every part and every family of the issue: dtypes, dropout, merge
through the model API and rsLoRA, near-miss module names and a second adapter, the
training step's order, clipping and NaN, graphs where a wrong order gives wrong gradients,
seeds, aliasing, seeded draws.
"""

from __future__ import annotations

import pytest
from grading import failed_messages, grade_changed
from mutations_engine import MUTATIONS_ENGINE
from mutations_graph import MUTATIONS_GRAPH
from mutations_lora import MUTATIONS_LORA
from mutations_model import MUTATIONS_MODEL
from mutations_train import MUTATIONS_TRAIN

from minilora.teach import student

NEW = MUTATIONS_GRAPH + MUTATIONS_ENGINE + MUTATIONS_LORA + MUTATIONS_MODEL + MUTATIONS_TRAIN


@pytest.mark.parametrize(
    "part, file, changes, words", NEW, ids=[f"{m[0]}-{i}" for i, m in enumerate(NEW)]
)
def test_a_mistake_loses_points_in_its_part_with_the_fault_named(
    tmp_path, part, file, changes, words
):
    result = grade_changed(tmp_path, part, file, changes)
    messages = failed_messages(result)
    assert result["score"] < result["max"], result
    if words is not None:
        assert words in messages, messages


def test_the_set_has_60_mutations_over_every_part_and_90_percent_named():
    assert len(NEW) >= 60
    assert {m[0] for m in NEW} == set(student.PARTS)
    named = sum(m[3] is not None for m in NEW)
    assert named >= 0.9 * len(NEW), (named, len(NEW))
