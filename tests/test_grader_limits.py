"""The grader's limits (issue 27): a part that loops or eats memory is graded in seconds, keeps
the checks that finished, and still gets the designed message where one fits."""

from __future__ import annotations

from grading import package_with
from mutations_graph import REGION

from minilora.teach import grade

LOOP = "    while True:\n        pass\n"
# the reference's order from the fourth call on: checks 1 and 2 pass, check 3 never returns and
# swallows every interruption, so only the part's own time limit stops it
LATE_LOOP = """    import builtins

    calls = builtins.__dict__.setdefault("_topo_calls", [0])
    calls[0] += 1
    while calls[0] > 4:
        try:
            while True:
                pass
        except BaseException:
            pass
    order, seen = [], set()
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((p, False) for p in node._parents if p.requires_grad and id(p) not in seen)
    return order
"""
HOG = "    hoard = []\n    while True:\n        hoard.append(bytearray(10**7))\n"


def test_a_loop_in_every_check_is_stopped_by_each_checks_time_limit(tmp_path):
    pkg = package_with(tmp_path, "topo_order", "tensor.py", [(REGION, LOOP)])
    result = grade.grade_part(pkg, "topo_order", scale=0.1)
    assert result["score"] == 0 and len(result["checks"]) == 4, result
    assert all("did not finish in" in c["message"] for c in result["checks"]), result
    ladders = [c["message"] for c in result["checks"] if "ladder" in c["name"]]
    assert len(ladders) == 2 and all("keep a set of visited nodes" in m for m in ladders)
    assert result["seconds"] < 30, result["seconds"]  # 0.3 s + 0.3 s + 1.5 s + 0.3 s, and starts


def test_a_loop_that_swallows_interruptions_keeps_the_finished_checks(tmp_path):
    pkg = package_with(tmp_path, "topo_order", "tensor.py", [(REGION, LATE_LOOP)])
    result = grade.grade_part(pkg, "topo_order", timeout=8, scale=0.2)
    passed, stuck, left = result["checks"][:2], result["checks"][2], result["checks"][3]
    assert all(c["passed"] for c in passed), result
    assert "the part's time limit (8 s) ran out during this check" in stuck["message"], stuck
    assert "not run" in left["message"] and result["score"] == 2, result


def test_memory_is_limited_per_grading_process(tmp_path):
    pkg = package_with(tmp_path, "unbroadcast", "broadcasting.py", [(REGION, HOG)])
    # each check's time limit scaled up, so that on a loaded machine memory stops it first
    result = grade.grade_part(pkg, "unbroadcast", memory=1.0, scale=10)
    assert result["score"] == 0 and len(result["checks"]) == 2, result
    assert all("ran out of memory" in c["message"] for c in result["checks"]), result
