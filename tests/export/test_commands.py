"""The export's command-line surface: `mmad export onnx|trt|verify|precisions` and the scripts are made
from the same typed configs; every option has a help sentence; a concept has one flag everywhere; a
bad input is one line and exit code 2. Torch-free (only parsers are built)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from mmad.export import bench_portable, cli
from mmad.export.command import EngineRequest, Script
from mmad.runtime.options import config_from_args, option

SCRIPTS = {name: script for name, script, _ in cli.COMMANDS} | {"bench_portable": bench_portable.SCRIPT}


def options_of(script: Script) -> dict[str, argparse.Action]:
    parser = argparse.ArgumentParser()
    script.add_arguments(parser)
    return {flag: a for a in parser._actions for flag in a.option_strings if flag not in ("-h", "--help")}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_option_has_a_help_sentence(name):
    found = options_of(SCRIPTS[name])
    assert found
    for flag, action in found.items():
        assert action.help and len(action.help.split()) >= 3, flag


def test_one_flag_per_concept():
    flags = {name: set(options_of(script)) for name, script in SCRIPTS.items()}
    assert {"--plugin-library", "--calib-data"} <= flags["trt"]
    assert "--calib-data" in flags["onnx"] and "--calib-data" in flags["precisions"]
    assert all(not {"--plugins", "--calib-dir"} & f for f in flags.values())
    assert all("--threads" in flags[name] for name in ("verify", "precisions", "bench_portable"))


def test_the_mmad_command_and_the_script_parse_alike():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli.register(sub)
    argv = ["--onnx", "m.onnx", "--out", "m.engine", "--plugin-library", "lib.so", "--batch", "1,2,4"]
    args = parser.parse_args(["export", "trt", *argv])
    assert args.func == SCRIPTS["trt"].run_command
    direct = argparse.ArgumentParser()
    SCRIPTS["trt"].add_arguments(direct)
    from_mmad, from_script = (config_from_args(EngineRequest, a) for a in (args, direct.parse_args(argv)))
    assert from_mmad == from_script
    assert from_script.batch == (1, 2, 4) and str(from_script.plugin_library) == "lib.so"


@dataclass
class _Config:
    value: int = option(1, help="a number the test reads")


def test_a_bad_input_is_one_line_and_exit_code_2(capsys):
    def refuse(config: _Config) -> int:
        raise ValueError(f"value {config.value}: refused")

    assert Script("demo", "Demo.\n\nMore.", _Config, refuse).main(["--value", "3"]) == 2
    assert capsys.readouterr().err == "demo: error: value 3: refused\n"
    assert Script("demo", "Demo.", _Config, lambda config: config.value).main(["--value", "0"]) == 0
