"""`mmad stream`'s command line, made from StreamConfig: every option has a help sentence, the flags are the
documented ones, and the parsed options fill the config; no GStreamer needed."""

from __future__ import annotations

import argparse
import dataclasses

from mmad.runtime.cli import build_parser
from mmad.runtime.options import config_from_args
from mmad.runtime.stream import StreamConfig

FLAGS = {
    "--model",
    "--source",
    "--out",
    "--events",
    "--events-mode",
    "--save-anomalies",
    "--roi",
    "--threshold",
    "--calibration",
    "--category",
    "--display",
    "--overlay-style",
    "--backend",
    "--op-library",
    "--plugin-library",
    "--allow-foreign-engine",
    "--max-frames",
    "--stats-interval",
    "--stats-json",
    "--reconnect-attempts",
    "--start-timeout",
    "--frame-timeout",
    "--on-disk-full",
    "--verbose",
}


def stream_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["stream"]


def test_every_stream_option_has_help_text():
    actions = [a for a in stream_parser()._actions if not isinstance(a, argparse._HelpAction)]
    missing = [a.option_strings for a in actions if not (a.help and len(a.help.split()) >= 3)]
    assert not missing, missing
    assert {f for a in actions for f in a.option_strings if f.startswith("--")} == FLAGS


def test_options_fill_the_stream_config():
    args = stream_parser().parse_args(
        ["--model", "m.onnx", "--source", "test", "--threshold", "0.7", "--max-frames", "5", "--display"]
    )
    config = config_from_args(StreamConfig, args)
    assert (config.model, config.source, config.threshold, config.max_frames) == ("m.onnx", "test", 0.7, 5)
    assert config.display and not config.allow_foreign_engine and config.events_mode == "anomaly"
    defaults = StreamConfig(model="m.onnx", source="test")
    unchanged = (
        "out",
        "backend",
        "stats_interval",
        "reconnect_attempts",
        "op_library",
        "frame_timeout",
        "on_disk_full",
    )
    assert all(getattr(config, f) == getattr(defaults, f) for f in unchanged)
    assert {f.name for f in dataclasses.fields(StreamConfig)} >= {"backoff_initial", "durable_events", "sync_interval"}


def test_calibration_category_and_overlay_style_options():
    args = stream_parser().parse_args(
        ["--model", "m.onnx", "--source", "test", "--calibration", "cam.json", "--category", "bottle"]
    )
    config = config_from_args(StreamConfig, args)
    assert (config.calibration, config.category, config.overlay_style) == ("cam.json", "bottle", "regions")
    defaults = StreamConfig(model="m.onnx", source="test")
    assert defaults.calibration is None and defaults.category is None  # None: the default file, else the metadata
    assert (
        config_from_args(
            StreamConfig,
            stream_parser().parse_args(["--model", "m.onnx", "--source", "test", "--overlay-style", "heat"]),
        ).overlay_style
        == "heat"
    )


def test_numbers_out_of_range_are_usage_errors_naming_the_flag_and_range(capsys):
    """Ranges live in the option's definition (options.number_in_range): a bad value never reaches the stream."""
    parser = stream_parser()
    base = ["--model", "m.onnx", "--source", "test"]
    bad = [
        ("--max-frames", "-1", "an integer >= 1"),
        ("--max-frames", "2.5", "an integer >= 1"),
        ("--stats-interval", "-1", "a number >= 0"),
        ("--reconnect-attempts", "-5", "an integer >= 0 or -1"),
        ("--start-timeout", "nan", "a number >= 0.1"),
        ("--frame-timeout", "0", "a number >= 0.1"),
    ]
    for flag, value, expected in bad:
        try:
            parser.parse_args([*base, flag, value])
        except SystemExit as stop:
            assert stop.code == 2
        else:
            raise AssertionError(f"{flag} {value} was accepted")
        err = capsys.readouterr().err
        assert f"argument {flag}" in err and expected in err, err
    good = parser.parse_args([*base, "--reconnect-attempts", "-1", "--stats-interval", "0", "--max-frames", "1"])
    assert (good.reconnect_attempts, good.stats_interval, good.max_frames) == (-1, 0.0, 1)
