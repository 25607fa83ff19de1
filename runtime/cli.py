"""The `mmad` command.

It lives in the runtime because the runtime is the one part every install has (a Jetson install
has no PyTorch). Each package contributes a light `cli` module (argparse only, no heavy imports at
module level) with `register(subparsers)`; the work behind a subcommand imports its dependencies
only when it runs, so `mmad stream` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that add subcommands, in the order they appear in `mmad --help`.
CLI_MODULES = [
    "mmad.training.cli",
    "mmad.export.cli",
    "mmad.runtime.calibrate.command",
    "mmad.runtime.stream.command",
    "mmad.runtime.bench.command",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmad", description="MMAD Edge: anomaly detection from training to a camera.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in CLI_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # a real import error inside the module, not a missing part
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("mmad: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as err:
        # The project's errors (bad data, checkpoint, model, source …) are ValueErrors whose message
        # names the file and what was expected: show that, not a traceback.
        print(f"mmad {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
