"""Command line of the course: ``python -m kdtutorial <command> ...`` (also the ``kdtutorial`` script).

Each subcommand lives in a module of this package named in ``COMMANDS``. The module provides
``COMMAND_HELP`` (one line), ``COMMAND_DESCRIPTION``, ``COMMAND_EPILOG``, ``configure_parser(parser)``
(adds its options) and ``command(args, parser) -> int`` (runs it, returns the exit status). Add a
subcommand by adding such a module and one entry here.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "run": "kdtutorial.course.runner",
    "readme-table": "kdtutorial.course.fullsummary",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kdtutorial",
        description="Tools for the kdtutorial knowledge-distillation course.",
        epilog="Run 'python -m kdtutorial <command> --help' for the options of a command.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(
            name, help=module.COMMAND_HELP, description=module.COMMAND_DESCRIPTION,
            epilog=getattr(module, "COMMAND_EPILOG", None),
            formatter_class=argparse.RawDescriptionHelpFormatter)
        module.configure_parser(sub)
        sub.set_defaults(handler=module.command, subparser=sub)
    return parser


def main(argv=None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the chosen command and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args, args.subparser)


if __name__ == "__main__":
    sys.exit(main())
