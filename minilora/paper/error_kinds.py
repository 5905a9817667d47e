"""Where LoRA's sql answers go wrong on each base: the query's structure, or a value.

An exact-match score does not say *what* is wrong. This module reads the LoRA r = 8 adapters
(Wq, Wv, alpha 16, at each base's chosen rate) that the protocol kept beside their records
(``experiments.keeps_adapter``), puts each back on its base, answers the first ``N_QUESTIONS``
sql test questions greedily, and sorts every answer into one of three kinds by comparing its
*skeleton* (every quoted string and number replaced by a placeholder) with the gold query's:

* right: the query is the gold query;
* a value wrong: the skeletons agree (table, columns, operators, clauses) but a string or a
  number copied from the question is not the question's;
* structure wrong: anything else (a clause too many or missing, another column or table).

Nothing is trained; the adapters are read from ``minilora/paper/records``. Run
``python -m minilora.paper.error_kinds`` (about half a minute per adapter on one core).
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from minilora.paper import protocol as P
from minilora.paper.budgets import get_budget
from minilora.paper.experiments import N_TEST, N_VAL, Cache

N_QUESTIONS = 200  # the first test questions (the records score 1,000)
KINDS = ("right", "a value wrong", "structure wrong")


def skeleton(query: str) -> str:
    """The query with every quoted string and every number replaced by a placeholder."""
    return re.sub(r"\d+(?:\.\d+)?", "N", re.sub(r"'[^']*'", "'S'", query.strip()))


def kind(answer: str, gold: str) -> str:
    """One of ``KINDS`` for a generated query against the gold one."""
    if answer.strip() == gold.strip():
        return "right"
    return "a value wrong" if skeleton(answer) == skeleton(gold) else "structure wrong"


def adapter_answers(run, n: int = N_QUESTIONS) -> list[tuple[str, str]]:
    """(answer, gold) for the first ``n`` test questions, from ``run``'s kept adapter."""
    from safetensors.numpy import load_file

    from minilora.paper.baselines import apply_method
    from minilora.paper.experiments import RECORDS
    from minilora.work.finetune import complete
    from minilora.work.pretrained import load_pretrained
    from minilora.work.tasks import make_task

    model, tokenizer, _ = load_pretrained(run.base)
    model = apply_method(model, run.method, dict(run.settings), np.random.default_rng(run.seed))
    params = dict(model.named_parameters())
    path = Cache(RECORDS).path(run).with_suffix(".safetensors")
    for name, value in load_file(str(path)).items():
        if not name.endswith(".init"):  # A as drawn, kept for section 7's nulls
            params[name].data[...] = value
    test = make_task(run.task, n_train=run.n_train, n_val=N_VAL, n_test=N_TEST, seed=0).test[:n]
    return list(zip(complete(model, tokenizer, [p for p, _ in test]), [a for _, a in test]))


def kept_runs(base: str, b) -> list:
    """The LoRA r = 8 sql runs on ``base`` at its chosen rate whose adapters were kept."""
    from minilora.paper.experiments import RECORDS

    lr, _ = P.choose_rate(b, "lora", "sql", P.Records(), base=base)
    runs = [P.protocol_run(b, "lora", "sql", P.LORA_SWEPT, s, lr, base) for s in b.main_seeds]
    return [r for r in runs if Cache(RECORDS).path(r).with_suffix(".safetensors").is_file()]


def table(bases, seeds=(0, 1, 2), n: int = N_QUESTIONS) -> list[str]:
    """A Markdown table: each base's answers by kind, mean over the kept seeds given."""
    b = get_budget("full-recorded")
    lines = [
        f"| base | seeds | {' | '.join(KINDS)} |",
        "|---|---|" + "---:|" * len(KINDS),
    ]
    for base in bases:
        runs = [r for r in kept_runs(base, b) if r.seed in seeds]
        counts = [Counter(kind(a, g) for a, g in adapter_answers(r, n)) for r in runs]
        cells = [f"{np.mean([c[k] for c in counts]) / n:.1%}" if counts else "—" for k in KINDS]
        lines.append(f"| {base} | {[r.seed for r in runs]} | {' | '.join(cells)} |")
    return lines


if __name__ == "__main__":  # pragma: no cover - reads the kept adapters, about 5 minutes
    from minilora.paper.bases import BASES

    print(f"LoRA r = 8 on sql, the first {N_QUESTIONS} test questions, by kind:\n")
    print("\n".join(table(BASES)))
