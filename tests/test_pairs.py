"""`minilora finetune --data FILE.jsonl` and `minilora data export` (minilora.work.pairs)."""

from __future__ import annotations

import json

import pytest

from minilora.cli import main
from minilora.interop.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from minilora.work.data import CharTokenizer
from minilora.work.pairs import held_out_split, read_pairs, write_pairs
from minilora.work.tasks import make_task

TOKENIZER = CharTokenizer("abcdefghijklmnopqrstuvwxyz :?\n<>END")


def run(argv, capsys):
    """(exit status, stdout, stderr) of ``minilora ARGV`` in this process."""
    capsys.readouterr()
    try:
        status = main(argv)
    except SystemExit as exit_info:
        status = exit_info.code
    out, err = capsys.readouterr()
    return status, out, err


def jsonl(path, *lines):
    """Write ``lines`` (dicts as JSON, strings as they are) one per line; return the path."""
    text = "".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines)
    path.write_text(text, encoding="utf-8")
    return path


def pair(prompt="what is it? ", completion="ok"):
    return {"prompt": prompt, "completion": completion}


# ---- fine-tuning on a file, end to end ------------------------------------------------------


def test_finetune_on_a_file_prints_loss_and_exact_match_and_saves_a_peft_adapter(tmp_path, capsys):
    # a task char-small learns in a few steps: every question is answered "yes"
    questions = [f"is {a} {b} a word? " for a in "abcdefgh" for b in "ijklm"]  # 40 pairs
    data = jsonl(tmp_path / "train.jsonl", *(pair(q, "yes") for q in questions))
    adapter = tmp_path / "adapter"
    argv = ["finetune", "--data", str(data), "--out", str(adapter), "--steps", "40",
            "--batch-size", "8", "--lr", "0.02", "--quiet"]  # fmt: skip
    status, out, err = run(argv, capsys)
    assert status == 0, err
    assert "fine-tuning on 36 pairs; validation: 4 of 40 pairs held out (seed 0)" in out
    loss = float(out.split("validation loss on 4 held-out pairs: ")[1].split()[0])
    assert 0 <= loss < 0.1  # "yes\n" after any question: learnt
    assert "exact match on 4 held-out pairs: 1.000" in out
    config = json.loads((adapter / ADAPTER_CONFIG).read_text())
    assert config["peft_type"] == "LORA" and config["target_modules"] == ["q_proj", "v_proj"]
    assert (adapter / ADAPTER_WEIGHTS).is_file()
    # the adapter answers a new question of the same kind, and stops after its answer
    prompt = "is z z a word? "
    argv = ["generate", "--adapter", str(adapter), "--prompt", prompt, "--temperature", "0",
            "--length", "20", "--stop", "\n"]  # fmt: skip
    status, out, err = run(argv, capsys)
    assert status == 0, err
    assert out == prompt + "yes\n\n"  # print adds the last newline


def test_a_validation_file_replaces_the_held_out_split(tmp_path, capsys):
    train = jsonl(tmp_path / "t.jsonl", pair("a? ", "x"), pair("b? ", "y"), pair("c? ", "z"))
    val = jsonl(tmp_path / "v.jsonl", pair("a? ", "x"), pair("d? ", "w"))
    argv = ["finetune", "--data", str(train), "--val", str(val), "--out", str(tmp_path / "a"),
            "--steps", "1", "--quiet"]  # fmt: skip
    status, out, err = run(argv, capsys)
    assert status == 0, err
    assert f"fine-tuning on 3 pairs; validation: 2 pairs of {val}" in out
    assert f"note: 1 prompt(s) of {val} are also in {train}" in out
    assert "exact match on 2 held-out pairs" in out


def test_the_held_out_split_is_seeded_disjoint_and_a_tenth():
    examples = [(f"p{i}", f"c{i}") for i in range(50)]
    train, val = held_out_split(examples, seed=3)
    assert len(val) == 5 and len(train) == 45
    assert sorted(train + val) == sorted(examples)
    assert held_out_split(examples, seed=3) == (train, val)
    assert held_out_split(examples, seed=4)[1] != val
    assert [len(v) for _, v in (held_out_split(examples[:n], 0) for n in (2, 3, 14, 16))] == [
        1, 1, 1, 2,
    ]  # fmt: skip


def test_bundled_tasks_export_as_the_pairs_finetune_reads(tmp_path, capsys):
    out = tmp_path / "sql.jsonl"
    status, printed, err = run(["data", "export", "sql", str(out), "--split", "test"], capsys)
    assert status == 0 and "200 sql test pairs written" in printed, err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    task = make_task("sql", 4000, 200, 200, seed=0)
    assert [(r["prompt"], r["completion"]) for r in records] == task.test
    tokenizer = CharTokenizer("".join(sorted(set(out.read_text()) | set("\n"))))
    assert read_pairs(out, tokenizer, 128).examples == task.test  # completions end with "\n"
    status, _, err = run(["data", "export", "nli", str(tmp_path / "n.jsonl")], capsys)
    assert status == 0 and len((tmp_path / "n.jsonl").read_text().splitlines()) == 4000
    status, _, err = run(["data", "export", "wiki", str(out)], capsys)
    assert status == 2 and "invalid choice: 'wiki'" in err


# ---- what is read, and what is refused -------------------------------------------------------


def test_stop_sequence_is_added_where_missing_and_blank_lines_are_skipped(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", pair("a? ", "yes"), "", pair("b? ", "no\n"), "  ")
    pairs = read_pairs(path, TOKENIZER, 32)
    assert pairs.examples == [("a? ", "yes\n"), ("b? ", "no\n")] and pairs.lines == [1, 3]
    pairs = read_pairs(path, TOKENIZER, 32, stop="<END>")
    assert pairs.examples == [("a? ", "yes<END>"), ("b? ", "no\n<END>")]


# (lines of the file, the words the one-line error must hold); every case names file and line
REFUSED = {
    "not-json": ([pair(), "{prompt: 'a'}"], ["line 2: not JSON", "at column 2", '{"prompt"']),
    "not-an-object": ([pair(), '["a", "b"]'], ["line 2: a JSON array, not an object"]),
    "missing-key": (
        [pair(), pair(), {"prompt": "a", "answer": "b"}],
        ["line 3: no 'completion' key (the line has ['answer', 'prompt'])"],
    ),
    "not-a-string": ([{"prompt": "a", "completion": 7}], ["line 1: 'completion' is a JSON number"]),
    "empty-completion": ([pair(), pair("a? ", "")], ["line 2: the completion is empty"]),
    "empty-prompt": ([pair("", "x")], ["line 1: the prompt is empty"]),
    "stop-inside": ([pair("a? ", "one\ntwo")], ["line 1: the completion holds the stop sequence"]),
    "unencodable": (
        [pair(), pair("a? ", "café")],
        [
            "line 2: the completion holds 'é', which the tokenizer cannot encode",
            "fixed vocabulary of 35 characters",
            "--skip-unencodable",
        ],
    ),  # fmt: skip
    "too-long": (
        [pair("a" * 40, "bb")],
        [
            "line 1: the example is 43 tokens (prompt 40, completion 3",
            "holds 33 (block size 32",
            "--truncate",
        ],
    ),  # fmt: skip
    "empty-file": ([], ["holds 0 example(s); expected at least 2"]),
    "one-example": ([pair()], ["holds 1 example(s); expected at least 2"]),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_pairs_are_refused_with_file_and_line(tmp_path, case):
    lines, words = REFUSED[case]
    path = jsonl(tmp_path / "bad.jsonl", *lines)
    with pytest.raises(ValueError) as info:
        read_pairs(path, TOKENIZER, 32)
    message = str(info.value)
    assert message.startswith(f"{path}"), message
    for word in words:
        assert word in message, message


def test_at_the_command_line_a_bad_line_is_one_line_naming_the_argument(tmp_path, capsys):
    path = jsonl(tmp_path / "bad.jsonl", pair(), pair(), "oops")
    out = tmp_path / "never"
    status, _, err = run(["finetune", "--data", str(path), "--out", str(out)], capsys)
    assert status == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"minilora finetune: --data {path}, line 3: not JSON"), err
    assert not out.exists()
    path.write_bytes(b'{"prompt": "a", "completion": "b"}\n{"prompt": "\xe9"}\n')
    status, _, err = run(["finetune", "--data", str(path), "--out", str(out)], capsys)
    assert status == 1 and "line 2: byte 0xe9 at column 13 is not UTF-8" in err, err
    status, _, err = run(["finetune", "--data", str(tmp_path / "no.jsonl"), "--out", str(out)],
                         capsys)  # fmt: skip
    assert status == 1 and "no.jsonl: no such file" in err
    for flag in (["--val", str(path)], ["--truncate"], ["--skip-unencodable"], ["--stop", "#"]):
        status, _, err = run(["finetune", "--out", str(out), *flag], capsys)
        assert status == 2 and f"{flag[0]} applies only with --data" in err, err
    status, _, err = run(["finetune", "--data", str(path), "--task", "nli", "--out", "o"], capsys)
    assert status == 2 and "not allowed with argument --data" in err


def test_skip_unencodable_drops_and_counts_but_still_needs_two_examples(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", pair("é? ", "x"), pair(), pair("b? ", "ü"), pair("c? ", "y"))
    pairs = read_pairs(path, TOKENIZER, 32, skip_unencodable=True)
    assert pairs.examples == [("what is it? ", "ok\n"), ("c? ", "y\n")]
    assert pairs.skipped == [(1, "é"), (3, "ü")]
    assert pairs.report() == [
        f"{path}: skipped 2 example(s) holding characters the tokenizer cannot encode "
        "(the first: line 1, 'é')"
    ]
    path = jsonl(tmp_path / "d.jsonl", pair("é? ", "x"), pair())
    with pytest.raises(ValueError, match="holds 1 example.s. after skipping 1; expected at least"):
        read_pairs(path, TOKENIZER, 32, skip_unencodable=True)


def test_truncate_keeps_the_end_of_a_long_prompt_and_never_cuts_the_completion(tmp_path):
    prompt = "abcdefghij" * 4 + "? "  # 42 characters
    path = jsonl(tmp_path / "d.jsonl", pair(prompt, "yes"), pair())
    pairs = read_pairs(path, TOKENIZER, 32, truncate=True)
    (cut, completion), kept = pairs.examples[0], pairs.examples[1]
    assert completion == "yes\n" and kept == ("what is it? ", "ok\n")
    assert cut == prompt[-(33 - 4) :] and len(cut) + len(completion) == 33  # the context, full
    assert pairs.truncated == 1 and "cut the start of 1 prompt(s)" in pairs.report()[0]
    path = jsonl(tmp_path / "d.jsonl", pair("a? ", "y" * 32), pair())
    with pytest.raises(ValueError, match="completion alone leaves no room.*--truncate cannot"):
        read_pairs(path, TOKENIZER, 32, truncate=True)


def test_write_pairs_round_trips_any_text(tmp_path):
    examples = [('línea 1\n"quoted"', "ünïcode ✓\n"), ("tab\there", "x\n")]
    write_pairs(tmp_path / "w.jsonl", examples)
    chars = "".join(sorted(set("".join(p + c for p, c in examples))))
    assert read_pairs(tmp_path / "w.jsonl", CharTokenizer(chars), 64).examples == examples
    lines = (tmp_path / "w.jsonl").read_text(encoding="utf-8").splitlines()
    assert [sorted(json.loads(line)) for line in lines] == [["completion", "prompt"]] * 2
