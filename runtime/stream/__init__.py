"""`mmad stream`: frames from a camera, file or RTSP stream through the model, out as an annotated video,
events and stats.

    command.py    the `stream` subcommand's options
    runner.py     StreamRunner: the loop, reconnects, signals; run_stream()
"""

from mmad.runtime.stream.runner import StreamConfig, StreamRunner, run_stream

__all__ = ["StreamConfig", "StreamRunner", "run_stream"]
