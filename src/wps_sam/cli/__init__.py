"""The ``wps-sam`` command: thin handlers over the library.

Every user error (bad path, data, checkpoint, option or config value) ends in one line on stderr and
exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Callable

from ..errors import WpsSamError
from .parsers import build_parser

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.debug:
        warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    handler: Callable[[argparse.Namespace], None] = args.func
    try:
        handler(args)
    except WpsSamError as exc:
        if args.debug:
            raise
        print(f"wps-sam {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the user gave cannot be written or read (permissions, disk full ...)
        if args.debug:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(
            f"wps-sam {args.command}: error: {exc.strerror or exc}{where} (check the path, its "
            f"permissions and free space)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"wps-sam {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
