"""`rtbserve loadgen`: entry point. Flags in `loadgen.options`, the flow in `loadgen.app`."""

from __future__ import annotations

import signal
import sys
import traceback
from collections.abc import Sequence
from types import FrameType

from rich.console import Console

from loadgen.exit_codes import ExitCode


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM (a Job's deadline, kubectl delete) stops the run like Ctrl-C: partial results kept
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    from loadgen import app
    from loadgen.options import parse_config

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["merge"]:  # `rtbserve loadgen merge`: the results of a run of many pods
        from loadgen.sharded import merge_main

        return merge_main(args[1:])
    try:
        config = parse_config(args)
    except SystemExit as exc:  # argparse: --help (0) or a bad flag (2)
        return exc.code if isinstance(exc.code, int) else int(ExitCode.USAGE)
    console = Console()
    errors = Console(stderr=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return app.run(config, console, errors)
    except KeyboardInterrupt:
        errors.print("interrupted before any result")
        return int(ExitCode.INTERRUPTED)
    except Exception:
        errors.print(f"internal error:\n{traceback.format_exc()}", markup=False, highlight=False)
        return int(ExitCode.INTERNAL)
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
