"""`mmad stream`: frames from a camera, file or RTSP stream through the model, out as an annotated video,
events and stats.

    config.py     StreamConfig: what the stream takes; its option fields are the command's flags
    runner.py     StreamRunner: the loop, reconnects, signals; run_stream()
    pipelines.py  the input (source -> appsink) and output (appsrc -> encoder / display) GStreamer pipelines
    stats.py      StreamStats, FrameClock (frame numbers, arrival times, drops), DecodeWatch (undecodable frames)
    outputs.py    outputs checked before the model loads, the recording's lock, saved frames, --on-disk-full
    command.py    the `stream` subcommand: its parser, made from StreamConfig
"""

from mmad.runtime.stream.config import StreamConfig
from mmad.runtime.stream.runner import StreamRunner, run_stream

__all__ = ["StreamConfig", "StreamRunner", "run_stream"]
