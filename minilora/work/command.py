"""What every ``minilora`` sub-command shares: argument types, checks made before any work,
and the rule for errors.

The rule: a mistake the command can expect (a bad argument, a missing or damaged
file, an adapter for another model, an output place that cannot be written) ends
the command with ONE line on stderr, ``minilora COMMAND: what went wrong``, and
exit status 2 for a usage error (an argument's value) or 1 for anything else.
The line names the argument, its value and what was expected. Anything else is
a bug: it is reported in one line too, as an internal error. ``--debug`` (or
MINILORA_DEBUG=1) shows the traceback instead. The paper's and the course's
sub-commands (``reproduce``, ``exercises``) use the same helpers.

Nothing heavy is imported here: ``minilora --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import sys
import tempfile
from pathlib import Path

from minilora import backend

# What a command expects to go wrong: a bad value (ValueError, and so io.CheckpointError), a
# missing key, a file that is missing, unreadable or unwritable (OSError), our own checks
# (RuntimeError, e.g. a diverged training or a missing CuPy; FloatingPointError from merge),
# an optional package that is not installed (ImportError). Anything else is a bug.
EXPECTED = (ValueError, KeyError, OSError, RuntimeError, ArithmeticError, ImportError)
USAGE, FAILURE = 2, 1  # exit statuses


class CommandError(Exception):
    """An expected failure with its one-line message and exit status (USAGE or FAILURE)."""

    def __init__(self, message: str, status: int = FAILURE):
        super().__init__(message)
        self.status = status


class CommandExit(SystemExit):
    """How ``main`` ends a failed command: SystemExit(status) whose str() is the line printed."""

    def __init__(self, status: int, line: str):
        super().__init__(status)
        self.line = line

    def __str__(self):
        return self.line


def _exit(prog: str, message: str, status: int):
    line = f"{prog}: {one_line(message)}"
    print(line, file=sys.stderr)
    raise CommandExit(status, line)


def one_line(message: str) -> str:
    """A message on one line: line breaks (and the indentation after them) become '; '."""
    return re.sub(r"\s*\n\s*", "; ", str(message).strip()).replace(":; ", ": ")


def _message(err: BaseException) -> str:
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        return err.args[0]  # str(KeyError) would add quotes
    return str(err) or type(err).__name__


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block) and exit status 2."""

    def error(self, message):
        _exit(self.prog, f"{message} (see {self.prog} --help)", USAGE)


@contextlib.contextmanager
def about(argument: str, value, status: int = FAILURE):
    """Name ``argument`` and its ``value`` in an expected error raised inside the block."""
    try:
        yield
    except CommandError:
        raise
    except EXPECTED as err:
        raise CommandError(f"{argument} {value}: {_message(err)}", status) from err


# ---- argument types: each names the value it refuses and what it expects --------------------


def integer(low: int):
    """argparse type: an integer >= ``low``."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"got {text!r}, expected an integer >= {low}")
        return value

    return parse


def number(low: float, high: float = math.inf, low_open=False, high_open=True):
    """argparse type: a finite number in [low, high) (``low_open``: low itself excluded)."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        inside = (low < value if low_open else low <= value) and (
            value < high if high_open else value <= high
        )
        if not (math.isfinite(value) and inside):
            raise argparse.ArgumentTypeError(
                f"got {text!r}, expected a finite number in {interval}"
            )
        return value

    return parse


def names(text):
    """argparse type: comma-separated names, at least one."""
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    if not items:
        raise argparse.ArgumentTypeError(f"got {text!r}, expected comma-separated names")
    return items


def check_output(path, argument: str, kind: str = "dir") -> None:
    """Fail now, before any work, unless ``path`` can be written as a ``kind`` (dir or file).

    A path that is a file where a directory is wanted (or the reverse), or that lies under a
    file, is a usage error; a place this process cannot write into is a PermissionError. The
    check really writes: it makes and removes a temporary directory in the nearest existing
    directory (permission bits alone do not tell, e.g. for root or a read-only disk).
    """
    path = Path(path)
    if kind == "dir" and path.exists() and not path.is_dir():
        raise CommandError(f"{argument} {path}: is an existing file; expected a directory", USAGE)
    if kind == "file" and path.is_dir():
        raise CommandError(f"{argument} {path}: is a directory; expected a file name", USAGE)
    place = path if kind == "dir" else path.parent
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise CommandError(
            f"{argument} {path}: {place} is a file, so nothing can be made under it", USAGE
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".minilora-check-", dir=place))
    except OSError as err:
        raise PermissionError(
            f"{argument} {path}: cannot write in {place} ({err.strerror or err})"
        ) from err


def common_arguments(p: argparse.ArgumentParser) -> None:
    """--seed, --device and --quiet, for the commands that compute."""
    p.add_argument(
        "--seed",
        type=integer(0),
        default=0,
        help="random seed (runs repeat bit for bit on the CPU)",
    )
    p.add_argument(
        "--device",
        default=None,
        choices=["cpu", "cuda"],
        help="where to compute (default: $MINILORA_DEVICE or cpu)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def lora_arguments(p: argparse.ArgumentParser) -> None:
    """--r, --alpha, --targets and --dropout, for the commands that train LoRA."""
    p.add_argument("--r", type=integer(1), default=8, help="LoRA rank r (default 8)")
    p.add_argument(
        "--alpha",
        type=number(0, low_open=True),
        default=None,
        help="LoRA alpha > 0; dW is scaled by alpha/r (default 2r)",
    )
    p.add_argument(
        "--targets",
        type=names,
        default=("q_proj", "v_proj"),
        help="comma-separated Linear names to adapt (default q_proj,v_proj)",
    )
    p.add_argument(
        "--dropout", type=number(0, 1), default=0.0, help="dropout on the adapter input, in [0, 1)"
    )


def outputs(parser, *places) -> None:
    """Declare a command's output places: (attribute, argument name, "dir" or "file"); they are
    checked (``check_output``) before the command starts."""
    parser.set_defaults(outputs=places)


def check_outputs(args) -> None:
    """``check_output`` for every output place the command declared with ``outputs``."""
    for attribute, argument, kind in getattr(args, "outputs", ()):
        check_output(getattr(args, attribute), argument, kind)


def run(prog: str, work, debug: bool = False):
    """``work()``'s result; an exception becomes one line on stderr and a ``CommandExit``."""
    try:
        return work()
    except CommandError as err:
        if debug:
            raise
        _exit(prog, str(err), err.status)
    except EXPECTED as err:
        if debug:
            raise
        _exit(prog, _message(err), FAILURE)
    except KeyboardInterrupt:
        if debug:
            raise
        _exit(prog, "interrupted", 130)
    except Exception as err:  # a bug: one line, but never silent
        if debug:
            raise
        _exit(
            prog,
            f"internal error, probably a bug in minilora: {type(err).__name__}: {_message(err)} "
            "(run again with --debug for the traceback)",
            FAILURE,
        )


def check_device(args) -> None:
    """The device from --device, else MINILORA_DEVICE, checked as the API checks it."""
    given = getattr(args, "device", None)
    source = f"--device {given}" if given else None
    device = given or backend.default_device()  # ValueError naming MINILORA_DEVICE
    source = source or f"MINILORA_DEVICE={device}"
    if device == "cuda":
        try:
            backend.array_module("cuda")  # CuPy and a GPU, or a RuntimeError saying what is missing
        except RuntimeError as err:
            raise CommandError(f"{source}: {err}") from err
    if hasattr(args, "device"):
        args.device = device
