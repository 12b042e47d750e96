"""The ``condnet`` command line: ``condnet <command> [options]``.

Each command lives in ``CondNetLogic/commands/<name>.py`` with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``--help`` stays instant.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

#: command name -> (module, one-line help)
COMMANDS = {
    "info": ("CondNetLogic.commands.info", "what this installation can do (devices, weights, coils)"),
    "convert": ("CondNetLogic.commands.convert", "label map -> uniform conductivity volume (Table I)"),
    "synth": ("CondNetLogic.commands.synth", "label map -> synthetic T1w/T2w pairs (domain randomisation)"),
    "build-training-set": ("CondNetLogic.commands.build_training_set", "label maps -> CondNet training set"),
    "train": ("CondNetLogic.commands.train", "train CondNet networks on a training set"),
    "predict": ("CondNetLogic.commands.predict", "T1 (+T2) -> CondNet conductivity (S/m) and uncertainty"),
    "evaluate": ("CondNetLogic.commands.evaluate", "CondNet vs a label map: per-tissue table, MAE, figures"),
    "demo": ("CondNetLogic.commands.demo", "whole pipeline on the shipped sample head"),
    "efield": ("CondNetLogic.commands.efield", "TMS E-field for one coil position (vector, |E|, JSON sidecar)"),
    "compare": ("CondNetLogic.commands.compare", "agreement of two E-fields in one head (GE, RDM/MAG, ratios)"),
    "dose": ("CondNetLogic.commands.dose", "stimulator output at a target for the motor threshold's M1 field"),
    "resample": ("CondNetLogic.commands.resample", "a volume onto isotropic voxels (e.g. before efield)"),
    "warmup": ("CondNetLogic.commands.warmup", "compile the E-field kernels now (once per installation)"),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; subcommand options are added only for the command being run."""
    parser = argparse.ArgumentParser(prog="condnet", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``condnet`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    known, rest = parser.parse_known_args(argv)
    if known.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(
        level=logging.DEBUG if known.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    module_name, help_text = COMMANDS[known.command]
    module = importlib.import_module(module_name)
    sub_parser = argparse.ArgumentParser(prog=f"condnet {known.command}", description=help_text)
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(rest)
    logging.captureWarnings(True)  # warnings become log records: one format, and kept off the progress bar's line
    try:
        return int(module.run(args) or 0)
    except (ValueError, OSError, RuntimeError) as err:  # OSError: missing, existing or unreadable files
        print(f"condnet {known.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = " (rerun the same command to resume from the last finished epoch)" if known.command == "train" else ""
        print(f"condnet {known.command}: interrupted{hint}", file=sys.stderr)
        return 130
    finally:
        logging.captureWarnings(False)


if __name__ == "__main__":
    sys.exit(main())
