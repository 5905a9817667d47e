"""The mutation check: one realistic bug at a time in the core, its tests run, the file put back.

A test suite is only as good as the bugs it catches. ``tools/mutants.py`` lists
one-line bugs a learner or a refactoring could plausibly write (a wrong sign in
a backward, a missing max shift, an off-by-one in the causal mask, ...). For each,
this script checks that its original text occurs exactly once in its file, puts
the bug in, runs that code's own test files (``pytest -x -q``, with a time limit),
puts the file back byte for byte, and prints whether the tests noticed
("killed") or not ("survived"), then the kill rate. Every mutant should be
killed; one that survives is a behaviour no test pins down (add a test), or a
change no test can see (mark it ``equivalent`` in the list, with the reason).

    python tools/mutate.py                 # every mutant (a few minutes on 2 cores)
    python tools/mutate.py --only softmax  # the mutants whose name or file contains "softmax"
    python tools/mutate.py --only sub --only 'fast_*'  # several patterns: either matches
    python tools/mutate.py --list          # the list, each checked against its file

It refuses to start while a file it would mutate has uncommitted changes (so a
mutant can never be mistaken for your work, nor your work be overwritten), and
restores each file in a ``finally``: on a test failure, a time-out, Ctrl-C or
SIGTERM. Only a SIGKILL can leave a mutant behind; the next run then refuses to
start, and ``git checkout -- FILE`` puts the file back. A developer's tool for
before a release, not a CI step.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # mutants.py lives beside this file

from mutants import MUTANTS, Mutant  # noqa: E402

KILLED, SURVIVED, TIMEOUT, EQUIVALENT = "killed", "survived", "timeout", "equivalent"


class MutantError(Exception):
    """The list no longer fits the code (moved or edited text), or a run could not be judged."""


def source_of(mutant: Mutant, root: Path) -> bytes:
    """The file's bytes, after checking that ``mutant.original`` occurs in it exactly once."""
    path = root / mutant.file
    if not path.is_file():
        raise MutantError(f"mutant {mutant.name!r}: file {mutant.file} does not exist")
    source = path.read_bytes()
    count = source.count(mutant.original.encode())
    if count != 1:
        raise MutantError(
            f"mutant {mutant.name!r}: its original text occurs {count} times in {mutant.file}, "
            f"expected exactly once (update tools/mutants.py when the code moves): "
            f"{mutant.original!r}"
        )
    if mutant.mutated == mutant.original:
        raise MutantError(f"mutant {mutant.name!r}: the mutated text equals the original")
    return source


@contextmanager
def applied(mutant: Mutant, root: Path):
    """Inside the block the file holds the mutant; afterwards the original bytes and mtime.

    The mutant's mtime differs from the original's by 2 s, so Python never takes a cached
    .pyc of the one for the other (pyc files are keyed on mtime and size); the original
    mtime is put back with the bytes, so the original's .pyc stays valid.
    """
    path = root / mutant.file
    source = source_of(mutant, root)
    stat = path.stat()
    mutated = source.replace(mutant.original.encode(), mutant.mutated.encode(), 1)
    try:
        path.write_bytes(mutated)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
        yield path
    finally:
        path.write_bytes(source)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def run_tests(tests, root: Path, timeout: float) -> tuple[str, float, str]:
    """Run ``pytest -x -q tests`` in ``root``: (killed | survived | timeout, seconds, detail).

    pytest's exit status 1 (a test failed) and 2 (collection failed: the mutant broke an
    import) mean killed, 0 survived; any other status (no such test file, no tests
    collected) is an error in the list and raises.
    """
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
        "PYTHONDONTWRITEBYTECODE": "1",  # no .pyc of a mutant is ever written
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1"),
    }
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return TIMEOUT, time.perf_counter() - start, f"no result in {timeout:.0f} s"
    seconds = time.perf_counter() - start
    if done.returncode == 0:
        return SURVIVED, seconds, ""
    if done.returncode in (1, 2):
        failed = [
            line.split(" - ")[0]
            for line in done.stdout.splitlines()
            if line.startswith(("FAILED ", "ERROR "))
        ]
        return KILLED, seconds, failed[0] if failed else f"pytest exit status {done.returncode}"
    raise MutantError(
        f"pytest {' '.join(tests)} ended with status {done.returncode} (not a test result):\n"
        + (done.stdout + done.stderr)[-2000:]
    )


def run_mutant(mutant: Mutant, root: Path, timeout: float) -> tuple[str, float, str]:
    """Apply ``mutant``, run its tests, restore the file: (outcome, seconds, detail)."""
    with applied(mutant, root):
        outcome, seconds, detail = run_tests(mutant.tests, root, timeout)
    if mutant.equivalent and outcome == SURVIVED:
        return EQUIVALENT, seconds, mutant.equivalent
    if mutant.equivalent:  # a test tells it apart after all: the note in the list is wrong
        detail = f"marked equivalent, yet {detail}"
    return outcome, seconds, detail


def uncommitted(root: Path, files) -> list[str]:
    """The files among ``files`` that git sees as changed; raises if git cannot tell."""
    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "--", *files],
            cwd=root,
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        raise MutantError("git is not installed: cannot check that the tree is clean") from None
    if done.returncode != 0:
        raise MutantError(f"git status failed in {root}: {done.stderr.strip()}")
    return [line[3:] for line in done.stdout.splitlines()]


def selected(patterns) -> list[Mutant]:
    """The mutants whose name or file contains one of ``patterns`` (or matches it as a glob)."""
    if not patterns:
        return list(MUTANTS)
    for pattern in patterns:
        if not any(matches(m, pattern) for m in MUTANTS):
            raise MutantError(f"--only {pattern!r} matches no mutant (see --list)")
    return [m for m in MUTANTS if any(matches(m, pattern) for pattern in patterns)]


def matches(mutant: Mutant, pattern: str) -> bool:
    return pattern in mutant.name or pattern in mutant.file or fnmatch.fnmatch(mutant.name, pattern)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        metavar="PATTERN",
        action="append",
        help="mutants whose name or file has this (repeat it for several)",
    )
    parser.add_argument("--list", action="store_true", help="list the mutants and check them")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip running the tests without mutants first"
    )
    args = parser.parse_args(argv)
    try:
        mutants = selected(args.only)
        for m in mutants:  # every mutant still fits its file, before anything is changed
            source_of(m, ROOT)
        if args.list:
            for m in mutants:
                note = f"  [equivalent: {m.equivalent}]" if m.equivalent else ""
                print(f"{m.name:38} {m.file:26} {m.why}{note}")
            print(f"{len(mutants)} mutants, each found exactly once in its file")
            return 0
        files = sorted({m.file for m in mutants})
        dirty = uncommitted(ROOT, files)
        if dirty:
            raise MutantError(
                f"uncommitted changes in {dirty}: commit or stash them first (a mutant must "
                "never be mixed with your work); after an interrupted run, git checkout -- FILE"
            )
        signal.signal(signal.SIGTERM, _raise_interrupt)
        start = time.perf_counter()
        if not args.no_baseline:
            tests = sorted({t for m in mutants for t in m.tests})
            outcome, seconds, detail = run_tests(tests, ROOT, args.timeout * 2)
            if outcome != SURVIVED:
                raise MutantError(f"the tests fail without any mutant ({detail}); fix them first")
            print(f"baseline: {len(tests)} test files pass without mutants ({seconds:.1f} s)")
            sys.stdout.flush()
        print(f"{'mutant':38} {'result':10} {'seconds':>7}  detail")
        results = []
        for m in mutants:
            outcome, seconds, detail = run_mutant(m, ROOT, args.timeout)
            results.append(outcome)
            print(f"{m.name:38} {outcome:10} {seconds:7.1f}  {detail}", flush=True)
    except MutantError as err:
        print(f"mutate.py: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mutate.py: interrupted; no mutant was left in the tree", file=sys.stderr)
        return 130
    counted = [r for r in results if r != EQUIVALENT]
    killed = sum(r in (KILLED, TIMEOUT) for r in counted)
    rate = 100.0 * killed / max(len(counted), 1)
    print(
        f"killed {killed} of {len(counted)} mutants ({rate:.1f}%), "
        f"{results.count(EQUIVALENT)} equivalent not counted; "
        f"{time.perf_counter() - start:.0f} s in all"
    )
    return 0 if killed == len(counted) else 1


if __name__ == "__main__":
    sys.exit(main())
