"""Checkers for the notebooks' exercises, and the ``minilora exercises`` sub-command.

Every exercise in ``notebooks/`` asks for a plain NumPy function (so the answer
can be written in any framework and graded against the golden vectors), and is
followed by a "check your answer" cell::

    from minilora.teach.exercises import check_matmul_backward
    check_matmul_backward(matmul_backward)

A checker calls the learner's function on fixed inputs (the golden vectors of
``minilora/teach/golden/v2`` and a few hand-picked cases) and compares each output
with the reference's (``recorded.answers``: computed by ``exercise_answers.py`` in a full
copy of minilora, recorded as data in the student package, which holds no formula and no
hint). On success it prints one line and returns True; on failure
it raises :class:`ExerciseError` (an ``AssertionError``, so nbgrader counts it)
naming the output, the shapes, the largest difference and, where it can tell,
the likely fault: a transposed matrix, a missing factor, a wrong sign. An
exercise still holding the student version's ``raise NotImplementedError()``
makes its check raise NotImplementedError, saying which function to write.

Command line (``minilora exercises ...``)::

    minilora exercises strip NOTEBOOK OUT     # the student version (no solutions)
    minilora exercises golden OUT_DIR         # write the golden vectors
    minilora exercises execute NOTEBOOK...    # run notebooks in place, keep outputs
"""

from __future__ import annotations

from minilora.teach.checking import (  # noqa: F401
    ExerciseError,
    _compare,
    _host,
    _Wrong,
    hide_hints,
    hints_hidden,
)
from minilora.teach.exercises_engine import (  # noqa: F401
    check_layer_norm_backward,
    check_matmul_backward,
    check_softmax_backward,
    check_unbroadcast,
)
from minilora.teach.exercises_lora import (  # noqa: F401
    check_inject_lora,
    check_lora_forward,
    check_lora_grads,
    check_lora_init,
    check_lora_param_count,
    check_merge,
)
from minilora.teach.exercises_model import (  # noqa: F401
    check_adamw_state_bytes,
    check_exact_match,
    check_greedy_decode,
    check_subspace_similarity,
    check_training_step,
)

# the exercises of each notebook, in order (tests/test_notebooks.py holds the notebooks to it)
EXERCISES = {
    "01_autograd": ["matmul_backward", "unbroadcast", "softmax_backward", "layer_norm_backward"],
    "02_lora_layer": ["lora_init", "lora_forward", "lora_grads", "merge", "lora_param_count"],
    "03_tiny_gpt": ["greedy_decode"],
    "04_finetune_and_merge": ["exact_match", "inject_lora", "training_step", "adamw_state_bytes"],
    "05_understanding_updates": ["subspace_similarity"],
}


def add_cli(subparsers) -> dict:
    """Add ``minilora exercises {strip,golden,execute}``; return {name: handler}."""
    from minilora.teach.notebook_tools import add_cli as add

    return add(subparsers)
