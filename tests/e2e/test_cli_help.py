"""`mmad <command> --help` lists every option of every command with a sentence: walks the real parser."""

from __future__ import annotations

import argparse

from mmad.runtime.cli import build_parser

COMMANDS = {"train", "eval", "export", "calibrate", "stream", "bench"}


def subcommands(parser: argparse.ArgumentParser, prefix: str = "mmad") -> dict[str, argparse.ArgumentParser]:
    """Every leaf command's parser, by its command line ("mmad export trt")."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(subcommands(sub, f"{prefix} {name}"))
    return found or {prefix: parser}


def test_every_option_of_every_command_has_help_text():
    commands = subcommands(build_parser())
    assert {line.split()[1] for line in commands} == COMMANDS
    missing = [
        f"{line} {action.option_strings[0]}"
        for line, parser in commands.items()
        for action in parser._actions
        if action.option_strings and action.help != argparse.SUPPRESS and not (action.help or "").strip()
    ]
    assert not missing, missing
