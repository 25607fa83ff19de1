"""Command-line options from typed configuration: each option is defined once, on the field it fills.

A command's configuration is a dataclass; a field that is a command-line option says so with
`option(...)` (its default, its help sentence, and where needed its flag, choices or parser). The
command's parser is then made from the dataclass, and its result turned back into the dataclass:

    @dataclass
    class StreamConfig:
        model: str = option(help="exported model: .onnx or .engine")        # required: no default
        threshold: float | None = threshold_option()                         # shared with other commands
        display: bool = option(False, help="show the annotated stream in a window")

    add_options(parser, StreamConfig)           # --model, --threshold, --display, typed, with help
    config = config_from_args(StreamConfig, args)

The type comes from the annotation: int, float, str, Path (None allowed), bool (a switch), or a
list of one of them (one or more values). A number's range is checked where the option is defined:
`parse=number_in_range(int, 1)` (a usage error naming the flag and the range). Options that mean the
same thing in several commands are made by the functions at the end of this module, so they have one
flag name and one help text.
Torch-free and argparse only: the runtime's `mmad` command imports it at start-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmad.runtime.contract import PLUGIN_ENV, check_threshold

_KEY = "cli"
_SCALARS = (int, float, str, Path)


@dataclasses.dataclass(frozen=True)
class _Option:
    help: str
    flag: str | None
    short: str | None
    metavar: str | None
    choices: tuple | None
    parse: Callable[[str], Any] | None


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,  # noqa: A002  -- argparse's word for it
    flag: str | None = None,
    short: str | None = None,
    metavar: str | None = None,
    choices: tuple | None = None,
    parse: Callable[[str], Any] | None = None,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field that is also a command-line option (`--field-name` unless `flag` is given).

    No default (and no default_factory) makes it required. `parse` turns the text into the field's
    value (e.g. "1,4" -> (1, 4)) and may raise ValueError, reported as a usage error naming the flag.
    """
    meta = {_KEY: _Option(help, flag, short, metavar, choices, parse)}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the type inside Optional / a list, whether it is a list)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else (str, False)
    if origin in (list, tuple):
        return typing.get_args(annotation)[0], True
    return annotation, False


def _parser_for(flag: str, parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"{text!r}: {err}") from None

    convert.__name__ = flag  # argparse names the converter in its "invalid ... value" message
    return convert


def _argument(field: dataclasses.Field, annotation: Any) -> tuple[list[str], dict]:
    spec: _Option = field.metadata[_KEY]
    flags = [spec.flag or "--" + field.name.replace("_", "-")] + ([spec.short] if spec.short else [])
    base, many = _base_type(annotation)
    has_default = field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    kwargs: dict[str, Any] = {"dest": field.name, "help": spec.help}
    if base is bool and not many:
        kwargs["action"] = argparse.BooleanOptionalAction if default else "store_true"
        kwargs["default"] = bool(default)
        return flags, kwargs
    if spec.parse is not None:
        kwargs["type"] = _parser_for(flags[0], spec.parse)
    elif base in _SCALARS:
        kwargs["type"] = base
    if many and spec.parse is None:
        kwargs["nargs"] = "+"
    if spec.choices:
        kwargs["choices"] = spec.choices
    if spec.metavar:
        kwargs["metavar"] = spec.metavar
    if has_default:
        kwargs["default"] = default
        if default not in (None, [], (), "") and "(default" not in spec.help:
            shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
            kwargs["help"] = f"{spec.help} (default: {shown})"
    else:
        kwargs["required"] = True
    return flags, kwargs


def add_options(parser: argparse.ArgumentParser, config_cls: type, *, exclude: tuple[str, ...] = ()) -> None:
    """Add an option for every `option(...)` field of `config_cls` (but those named in `exclude`)."""
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        if _KEY in field.metadata and field.name not in exclude:
            flags, kwargs = _argument(field, hints[field.name])
            parser.add_argument(*flags, **kwargs)


def config_from_args(config_cls: type, args: argparse.Namespace, **values: Any) -> Any:
    """The dataclass filled from parsed options; `values` set (or override) fields by name."""
    found = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls) if hasattr(args, f.name)}
    return config_cls(**{**found, **values})


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    config_cls: type,
    run: Callable[[argparse.Namespace], int],
    *,
    help: str,  # noqa: A002  -- argparse's word for it
    description: str,
    epilog: str | None = None,
    verbose_help: str = "debug logging",
) -> argparse.ArgumentParser:
    """A `mmad NAME` subcommand whose options are `config_cls`'s, plus -v/--verbose.

    How much is logged is not part of what the command does, so --verbose is the command's, not the
    config's; `run(args)` calls log_to_stderr(name, args.verbose) first. The `mmad` command turns a
    ConfigError (a ValueError) into one line on stderr and exit code 2.
    """
    parser = subparsers.add_parser(
        name, help=help, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_options(parser, config_cls)
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose_help)
    parser.set_defaults(func=run)
    return parser


def log_to_stderr(command: str, verbose: bool) -> None:
    """Log lines as "mmad COMMAND: message" on stderr, INFO (DEBUG with --verbose)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=f"mmad {command}: %(message)s", stream=sys.stderr
    )


# --- Options that mean the same thing in several commands ----------------------------------------
def plugin_library_option() -> Any:
    return option(
        None,
        flag="--plugin-library",
        metavar="LIB",
        help=f"TensorRT plugin library with the SelectiveScan op (libmmad_trt_plugins.so; default: ${PLUGIN_ENV}; "
        "running an engine, also the library its sidecar names)",
    )


def op_library_option() -> Any:
    return option(
        None,
        flag="--op-library",
        metavar="LIB",
        help="the library serving the SelectiveScan op of a custom-op graph: an onnxruntime custom-op library, or "
        "for OpenVINO its extension (default: the project's CPU kernel through onnxruntime-extensions, or the "
        "project's OpenVINO extension, built on first use)",
    )


def calib_data_option() -> Any:
    return option(
        flag="--calib-data",
        metavar="DIR",
        default_factory=list,
        help="folders of normal images that calibrate INT8 quantisation",
    )


def number_in_range(kind: type, low: float | None = None, high: float | None = None, *, also: tuple = ()) -> Any:
    """A `parse` for option(): the text as `kind` (int or float), finite and in [low, high] (a bound None: open),
    or one of the special values `also` (e.g. -1 for "never"); ValueError saying what was expected otherwise."""
    bounds = " and ".join(
        b for b in (f">= {low:g}" if low is not None else "", f"<= {high:g}" if high is not None else "") if b
    )
    wanted = f"{'an integer' if kind is int else 'a number'}{' ' + bounds if bounds else ''}"
    wanted += "".join(f" or {v}" for v in also)

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"expected {wanted}") from None
        if value in also:
            return value
        if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"expected {wanted}")
        return value

    return parse


def threads_option() -> Any:
    return option(
        None,
        flag="--threads",
        parse=number_in_range(int, 1),
        help="CPU threads for onnxruntime, OpenVINO and PyTorch (default: the CPUs usable here)",
    )


def parse_threshold(text: str) -> float:
    """--threshold: a finite number >= 0 (the model's score range is checked when it is loaded)."""
    return check_threshold(float(text), "a threshold")


def threshold_option() -> Any:
    return option(
        None,
        flag="--threshold",
        parse=parse_threshold,
        help="image anomaly threshold (default: the calibration file beside the model, else the model's metadata)",
    )
