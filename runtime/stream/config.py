"""What `mmad stream` takes: StreamConfig, whose option fields are the command's flags (mmad.runtime.options).

    config = StreamConfig(model="model.onnx", source="rtsp://cam/live", out="annotated.mp4")
    code, stats = run_stream(config)

The fields without `option(...)` are tuning knobs for code that calls the stream (tests, the stream
benchmark); they have no flag.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmad.runtime.backends import BACKEND_CHOICES
from mmad.runtime.options import op_library_option, option, plugin_library_option, threshold_option
from mmad.runtime.processing import OVERLAY_STYLES

EVENTS_MODES = ("anomaly", "frame")  # a line per anomalous frame, or per inferred frame


@dataclass
class StreamConfig:
    """Everything `mmad stream` takes; each option field is the flag of that name."""

    model: str = option(help="exported model: .onnx (onnxruntime) or .engine/.plan (TensorRT)")
    source: str = option(metavar="SRC", help="where frames come from (see 'sources' below)")
    out: str | None = option(None, metavar="VIDEO", help="write the annotated video here (.mp4, .mkv, .mov)")
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
    max_frames: int | None = option(None, metavar="N", help="stop after this many inferred frames")
    stats_interval: float = option(
        5.0, metavar="SECONDS", help="seconds between stats lines on stderr (0: only the final one)"
    )
    stats_json: str | None = option(
        None, metavar="FILE", help="write the final stats (counts, FPS, latency, time shares) here"
    )
    reconnect_attempts: int = option(-1, metavar="N", help="give up after this many consecutive reconnects (-1: never)")
    # No flags: for callers that tune the stream.
    backoff_initial: float = 0.5  # seconds before the first reconnect; doubles each failed try
    backoff_max: float = 10.0
    stall_timeout: float = 10.0  # a network source silent this long counts as lost
    min_region_area: int = 16
    durable_events: bool = True  # fsync each event line
