"""What `mmad stream` takes: StreamConfig, whose option fields are the command's flags (mmad.runtime.options).

    config = StreamConfig(model="model.onnx", source="rtsp://cam/live", out="annotated.mp4")
    code, stats = run_stream(config)

The fields without `option(...)` are tuning knobs for code that calls the stream (tests, the stream
benchmark); they have no flag.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmad.runtime.backends import BACKEND_CHOICES
from mmad.runtime.options import number_in_range, op_library_option, option, plugin_library_option, threshold_option
from mmad.runtime.processing import OVERLAY_STYLES
from mmad.runtime.stream.outputs import DISK_FULL_POLICIES

EVENTS_MODES = ("anomaly", "frame")  # a line per anomalous frame, or per inferred frame


@dataclass
class StreamConfig:
    """Everything `mmad stream` takes; each option field is the flag of that name."""

    model: str = option(help="exported model: .onnx (onnxruntime) or .engine/.plan (TensorRT)")
    source: str = option(metavar="SRC", help="where frames come from (see 'sources' below)")
    out: str | None = option(
        None,
        metavar="VIDEO",
        help="write the annotated video here (.mp4, .mkv, .mov); written in fragments of a second, so a killed run "
        "or a power cut keeps all but its last moments; a file another mmad stream is writing is refused",
    )
    events: str | None = option(None, metavar="FILE", help="append events as JSON lines here")
    events_mode: str = option(
        "anomaly", choices=EVENTS_MODES, help="a line per anomalous frame (anomaly) or per inferred frame (frame)"
    )
    save_anomalies: str | None = option(None, metavar="DIR", help="save anomalous frames (raw and annotated JPEG) here")
    roi: str | None = option(None, metavar="x,y,w,h", help="inspect only this region of the frame (pixels)")
    calibration: str | None = option(
        None,
        metavar="FILE",
        help="thresholds measured on site by mmad calibrate (default: MODEL.calibration.json when it exists, "
        "else the model's metadata)",
    )
    category: str | None = option(
        None, metavar="NAME", help="use this product category's thresholds (a multi-category model or calibration)"
    )
    threshold: float | None = threshold_option()  # overrides the calibrated / metadata image threshold
    display: bool = option(False, help="show the annotated stream in a window")
    overlay_style: str = option(
        "regions",
        choices=OVERLAY_STYLES,
        help="annotated frames: colour only the defect regions (regions) or blend the whole heat map (heat)",
    )
    backend: str = option("auto", metavar="NAME", help=f"inference backend, one of {', '.join(BACKEND_CHOICES)}")
    op_library: str | None = op_library_option()
    plugin_library: str | None = plugin_library_option()
    allow_foreign_engine: bool = option(False, help="try a TensorRT engine built for another TensorRT version or GPU")
    max_frames: int | None = option(
        None, metavar="N", parse=number_in_range(int, 1), help="stop after this many inferred frames"
    )
    stats_interval: float = option(
        5.0,
        metavar="SECONDS",
        parse=number_in_range(float, 0),
        help="seconds between stats lines on stderr (0: only the final one)",
    )
    stats_json: str | None = option(
        None, metavar="FILE", help="write the final stats (counts, FPS, latency, time shares) here"
    )
    reconnect_attempts: int = option(
        -1,
        metavar="N",
        parse=number_in_range(int, 0, also=(-1,)),
        help="give up after this many consecutive reconnects (-1: never)",
    )
    start_timeout: float = option(
        30.0,
        metavar="SECONDS",
        parse=number_in_range(float, 0.1),
        help="the source must give its first frame within this time, every source kind (a file that never starts "
        "decoding, a camera or server that never answers): else exit 1",
    )
    frame_timeout: float = option(
        10.0,
        metavar="SECONDS",
        parse=number_in_range(float, 0.1),
        help="no frame for this long: an RTSP camera counts as lost and reconnects, any other source ends the run "
        "(exit 1)",
    )
    on_disk_full: str = option(
        "stop",
        choices=DISK_FULL_POLICIES,
        help="when the disk holding an output (--out, --events, --save-anomalies) fills up: stop (end the run, exit "
        "1: nobody is left believing a record is being kept) or continue (keep inspecting without that output, "
        "warn, exit 3 at the end)",
    )
    # No flags: for callers that tune the stream.
    backoff_initial: float = 0.5  # seconds before the first reconnect; doubles each failed try
    backoff_max: float = 10.0
    sync_interval: float = 2.0  # seconds between fsyncs of the recording (what a power cut can lose)
    min_region_area: int = 16
    durable_events: bool = True  # fsync each event line
