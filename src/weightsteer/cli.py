"""The command line. Thin: it parses arguments and calls the modules that do the work.

Every user-fixable problem is a WeightsteerError: one line on stderr, exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import WeightsteerError
from .hub import bound_requests


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line; with --preset, the preset's values are the defaults (explicit options win)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "preset", None):
        from .presets import defaults

        args.command_parser.set_defaults(**defaults(args.preset))
        args = parser.parse_args(argv)
    return args


def quiet_libraries() -> None:
    """Our own progress bars and messages say what is happening; the libraries' would drown them."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    bound_requests()


def close_progress_bars() -> None:
    from tqdm import tqdm

    for bar in list(tqdm._instances):
        bar.close()


def report_os_error(err: OSError) -> str:
    """One line for a file the OS would not let us write or read: the path and the OS's reason."""
    where = f" '{err.filename}'" if err.filename else ""
    return f"cannot use{where}: {err.strerror or err} (check the path, its permissions and the free space)"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        quiet_libraries()
        args = parse_args(argv)
        from .threads import choose_threads

        choose_threads()  # silent: bad input must still get exactly one line on stderr
        args.func(args)
    except WeightsteerError as err:
        print(f"weightsteer: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a read-only folder, a file where a folder should be, a full disk
        if err.filename is None:
            raise
        print(f"weightsteer: error: {report_os_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        close_progress_bars()  # else they redraw once more, after the message
        print("weightsteer: interrupted; finished stages are kept and the next run resumes", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
