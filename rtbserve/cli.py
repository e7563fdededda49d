"""The `rtbserve` command: each subcommand lives in the package that owns it.

Subcommands are imported lazily so that, for example, `rtbserve serve` never pays
for importing the operator's Kubernetes client.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

# subcommand -> (module, function, help). Each function takes argv and returns an exit code.
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": ("model_server.serve_cli", "main", "serve a model artifact over Thrift"),
    "train": ("model_server.train_cli", "main", "train a model and write an artifact"),
    "loadgen": ("loadgen.cli", "main", "send OpenRTB traffic at a fixed rate and report latency"),
    "operator": ("rtbserve_operator.cli", "main", "run the InferenceModel Kubernetes operator"),
    "capacity": (
        "rtbserve.capacity_cli",
        "main",
        "pods, nodes and cost for a rate, from a measured capacity profile",
    ),
    "demo": ("rtbserve.demo", "main", "train, upload, serve and load-test on this machine"),
}


def _usage() -> str:
    lines = ["usage: rtbserve <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, _, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run `rtbserve <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    if args[0] == "--version":
        from rtbserve import __version__

        print(f"rtbserve {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"rtbserve: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name, _ = SUBCOMMANDS[name]
    func: Callable[[list[str]], int] = getattr(importlib.import_module(module_name), func_name)
    return func(rest)


if __name__ == "__main__":
    sys.exit(main())
