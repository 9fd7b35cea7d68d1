"""`mtz`: train, evaluate, zip and sweep from the command line (`mtz COMMAND --help`).

A thin, scriptable shell over the library: every command takes `--json` (one JSON document on
stdout), progress bars go to stderr, and a failure is one line `mtz: error: ...` with exit code
2 for a bad argument, 1 for anything that fails at run time (a missing file, an incompatible
pair, CUDA not available) and 130 for Ctrl-C — never a traceback (MTZ_DEBUG=1 shows one).
Task splits are fixed by a data seed that `mtz train` records in its checkpoints, so a later
zip reads the same calibration/test split the model was trained on.
"""

from __future__ import annotations

import os
import sys

from .arguments import UsageError, build_parser
from .commands import COMMANDS, _Run

__all__ = ["main", "build_parser", "UsageError"]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, KeyError) or not text:  # KeyError's text is a bare quoted key
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text


def main(argv: list[str] | None = None) -> int:
    """Run `mtz` with `argv` (default: sys.argv[1:]) and return the exit code; never raises."""
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help and --version exit through argparse
            return exc.code if isinstance(exc.code, int) else 0
        args.argv = list(sys.argv[1:] if argv is None else argv)  # `mtz zip --nproc` relaunches
        return COMMANDS[args.command](_Run(args))
    except UsageError as exc:
        print(f"mtz: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtz: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("MTZ_DEBUG"):
            raise
        print(f"mtz: error: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
