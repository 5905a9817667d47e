"""The ``minilora`` command: demo, pretrain, generate, finetune, merge, data, export-hf,
import-hf, reproduce (the paper's tables and figures) and exercises (course material).

Each sub-command's ``--help`` says what it does and what every option means. The
sub-commands live in this folder by what they work on: ``models`` (demo, pretrain,
generate, merge), ``finetuning`` (finetune, data) and ``hf`` (export-hf, import-hf); the
paper's and the course's live beside the code they run (``COMMAND_MODULES``).

An expected error is ONE line on stderr and exit status 2 (usage) or 1, found
before any work where it can be; ``minilora --debug COMMAND`` shows the traceback
(the rule and its helpers: ``minilora.work.command``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys

from minilora.cli import finetuning, hf, models
from minilora.cli.finetuning import TASKS  # noqa: F401 (tests compare it with the tasks')
from minilora.work import command as cmd
from minilora.work.memory import tune_malloc

DEBUG_HELP = "on an error, show the traceback instead of one line (also MINILORA_DEBUG=1)"

# Sub-commands that live beside the code they run: each module's add_cli(subparsers) adds its
# parsers and returns {name: handler(args, command)}.
COMMAND_MODULES = (
    "minilora.paper.reproduce",
    "minilora.teach.exercises",
    "minilora.teach.student",
    "minilora.teach.grade",
)

# This folder's sub-commands: name -> handler(args, command). A module-level dict, so that a
# test can replace one handler (monkeypatch.setitem) before calling main.
COMMANDS = {**models.HANDLERS, **finetuning.HANDLERS, **hf.HANDLERS}


def build_parser() -> argparse.ArgumentParser:
    parser = cmd.Parser(
        prog="minilora",
        description="LoRA (Hu et al. 2021) from scratch on a tiny NumPy/CuPy autograd engine.",
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    models.add_parsers(sub)
    finetuning.add_parsers(sub)
    hf.add_parsers(sub)
    for module_name in COMMAND_MODULES:
        COMMANDS.update(importlib.import_module(module_name).add_cli(sub))
    for p in sub.choices.values():  # `minilora COMMAND --debug ...` works too
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def main(argv=None) -> int:
    """Run the command line ``argv``; 0 on success. A failure prints one line on stderr and
    raises ``CommandExit`` (a SystemExit: status 2 for usage errors, 1 otherwise)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("MINILORA_DEBUG", "").strip() not in ("", "0")
    nested = ("exercises_command", "course_command", "data_command")
    sub_command = next((getattr(args, a) for a in nested if getattr(args, a, None)), None)
    prog = " ".join(["minilora", args.command, sub_command or ""])
    prog = prog.strip()
    command = "minilora " + " ".join(shlex.quote(a) for a in argv)

    def work():
        cmd.check_device(args)
        cmd.check_outputs(args)
        tune_malloc()  # long work starts here (see minilora.work.memory)
        return COMMANDS[args.command](args, command) or 0

    return cmd.run(prog, work, debug)


if __name__ == "__main__":
    sys.exit(main())
