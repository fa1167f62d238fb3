"""The command line. Thin: it parses arguments and calls the modules that do the work.

Every user-fixable problem is a WeightsteerError: one line on stderr, exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import WeightsteerError


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of argparse's usage block
        raise WeightsteerError(f"{message} (see '{self.prog} --help')")


COMMAND_GROUPS = ("run", "behaviours", "evaluate", "sweep", "share")  # modules in weightsteer.commands, each with register(subparsers)


def build_parser() -> Parser:
    parser = Parser(prog="weightsteer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in COMMAND_GROUPS:
        importlib.import_module(f"weightsteer.commands.{group}").register(sub)
    return parser


def quiet_libraries() -> None:
    """Our own progress bars and messages say what is happening; the libraries' would drown them."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        quiet_libraries()
        args = build_parser().parse_args(argv)
        from .threads import choose_threads

        choose_threads()  # silent: bad input must still get exactly one line on stderr
        args.func(args)
    except WeightsteerError as err:
        print(f"weightsteer: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("weightsteer: interrupted; finished stages are kept and the next run resumes", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
