"""Atomic writes (minilora.work.files): a file or a directory is there whole, or the old one is.

Interruptions are simulated by making one step raise (a write, an fsync, a
rename) and checking what is on disk afterwards: the old file or directory,
loadable and unchanged, and no temporary file or directory beside it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

import minilora.work.io as mio
from minilora.creation import manual_seed
from minilora.transformer import GPT, GPTConfig
from minilora.work.data import CharTokenizer
from minilora.work.files import CheckpointError, atomic_directory, write_atomic
from minilora.work.io import load_model, save_model

CONFIG = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, d_model=8)
CHECKPOINT = {"config.json", "model.safetensors"}


def tiny_gpt(seed=0) -> GPT:
    manual_seed(seed)
    return GPT(CONFIG, generator=np.random.default_rng(seed))


def names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def contents(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


# ---- one file ------------------------------------------------------------------------


def test_write_atomic_takes_bytes_or_a_writer(tmp_path):
    write_atomic(tmp_path / "a.bin", b"bytes")
    write_atomic(tmp_path / "b.bin", lambda f: f.write(b"written by a function"))
    assert (tmp_path / "a.bin").read_bytes() == b"bytes"
    assert (tmp_path / "b.bin").read_bytes() == b"written by a function"
    assert names(tmp_path) == {"a.bin", "b.bin"}


def test_a_writer_that_fails_leaves_the_old_file(tmp_path):
    write_atomic(tmp_path / "f", b"old")

    def half(f):
        f.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(tmp_path / "f", half)
    assert (tmp_path / "f").read_bytes() == b"old" and names(tmp_path) == {"f"}


def test_files_and_directories_get_the_umask_permissions(tmp_path, umask):
    """Not tempfile's owner-only 0600 / 0700: 0666 and 0777 less the umask."""
    write_atomic(tmp_path / "file", b"x")
    assert mode(tmp_path / "file") == 0o666 & ~umask
    save_model(tiny_gpt(), tmp_path / "ckpt", CharTokenizer("abc"))
    assert mode(tmp_path / "ckpt") == 0o777 & ~umask
    for name in CHECKPOINT:
        assert mode(tmp_path / "ckpt" / name) == 0o666 & ~umask
    CharTokenizer("abc").save(tmp_path / "tok.json")
    assert mode(tmp_path / "tok.json") == 0o666 & ~umask


def test_the_tokenizer_is_written_atomically(tmp_path, monkeypatch):
    CharTokenizer("abc").save(tmp_path / "tok.json")

    def crash(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        CharTokenizer("abcdef").save(tmp_path / "tok.json")
    monkeypatch.undo()
    assert CharTokenizer.load(tmp_path / "tok.json") == CharTokenizer("abc")
    assert names(tmp_path) == {"tok.json"}


# ---- a whole directory -----------------------------------------------------------------


def interrupt_between_weights_and_config(monkeypatch):
    """The next save_model writes model.safetensors, then is cut off before config.json."""

    def cut(path, obj):
        raise KeyboardInterrupt(f"power cut before {path}")

    monkeypatch.setattr(mio, "write_json", cut)


def test_an_interrupted_save_leaves_the_old_checkpoint_whole(tmp_path, monkeypatch):
    target = tmp_path / "ckpt"
    old = tiny_gpt(seed=1)
    save_model(old, target, CharTokenizer("abc"), {"step": 1})
    before = contents(target)
    interrupt_between_weights_and_config(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        save_model(tiny_gpt(seed=2), target, CharTokenizer("abc"), {"step": 2})
    monkeypatch.undo()
    assert names(tmp_path) == {"ckpt"}  # no temporary directory beside it
    assert contents(target) == before  # the old weights too, not the new ones
    loaded, tok, meta = load_model(target)
    assert meta == {"step": 1} and tok == CharTokenizer("abc")
    np.testing.assert_array_equal(loaded.wte.weight.data, old.wte.weight.data)


def test_an_interrupted_first_save_leaves_nothing(tmp_path, monkeypatch):
    interrupt_between_weights_and_config(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        save_model(tiny_gpt(), tmp_path / "ckpt")
    assert names(tmp_path) == set()


def test_a_failed_rename_into_place_puts_the_old_directory_back(tmp_path, monkeypatch):
    target = tmp_path / "ckpt"
    save_model(tiny_gpt(seed=1), target)
    before = contents(target)
    real_replace = os.replace

    def fail_moving_the_new_directory_in(src, dst):
        if Path(dst) == target and Path(src).suffix == ".tmp":  # not the old one coming back
            raise OSError("rename failed")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_moving_the_new_directory_in)
    with pytest.raises(OSError, match="rename failed"):
        save_model(tiny_gpt(seed=2), target)
    monkeypatch.undo()
    assert names(tmp_path) == {"ckpt"} and contents(target) == before
    load_model(target)


def test_saving_again_keeps_what_only_the_old_directory_held(tmp_path):
    """pretrain saves its final model into out_dir, beside training's last/ and best/."""
    save_model(tiny_gpt(seed=1), tmp_path / "run" / "last")
    save_model(tiny_gpt(seed=1), tmp_path / "run")
    (tmp_path / "run" / "notes.txt").write_text("mine")
    second = tiny_gpt(seed=2)
    save_model(second, tmp_path / "run")
    assert names(tmp_path / "run") == CHECKPOINT | {"last", "notes.txt"}
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
    loaded, _, _ = load_model(tmp_path / "run")
    np.testing.assert_array_equal(loaded.wte.weight.data, second.wte.weight.data)
    load_model(tmp_path / "run" / "last")
    assert names(tmp_path) == {"run"}


def test_atomic_directory_refuses_a_file_and_optionally_a_full_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="file: exists and is not a directory"):
        with atomic_directory(tmp_path / "file"):
            pass
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a").write_text("a")
    with pytest.raises(CheckpointError, match="full: already exists"):
        with atomic_directory(tmp_path / "full", replace=False):
            pass
    assert names(tmp_path) == {"file", "full"}
    with atomic_directory(tmp_path / "full") as tmp:  # replace=True: the new one wins
        (tmp / "a").write_text("new")
    assert (tmp_path / "full" / "a").read_text() == "new"
    assert names(tmp_path) == {"file", "full"}
