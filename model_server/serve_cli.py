"""`rtbserve serve`: parse flags and environment, then run the server."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from model_server.serve_config import ConfigError, load_config


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load_config(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"rtbserve serve: {exc}", file=sys.stderr)
        return 2
    # Imported after the flags are checked, so `--help` and mistakes answer at once.
    from model_server.server import serve

    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
