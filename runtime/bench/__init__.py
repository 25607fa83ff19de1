"""Benchmarks of a deployed model: `mmad bench` (latency per backend and stage, deviation from the
reference, environment) and the stream's own frames per second.

    command.py      the `bench` subcommand's options
    latency.py      `mmad bench`: candidates, frames, timing, deviation, the run
    environment.py  the machine the numbers were measured on
    report.py       report.md and the plots
    stream_fps.py   frames per second of `mmad stream` (python -m mmad.runtime.bench.stream_fps)
"""
