"""`mmadinfer`: anomaly inspection as a GStreamer element, for users' own pipelines.

    GST_PLUGIN_PATH=$(python -c 'from mmad.runtime.gst_util import PLUGIN_DIR; print(PLUGIN_DIR)') \
    gst-launch-1.0 -m v4l2src ! videoconvert ! video/x-raw,format=RGB ! queue leaky=downstream max-size-buffers=1 \
        ! mmadinfer model=model.onnx ! videoconvert ! autovideosink

An in-place transform on RGB frames. For each frame it runs the model, draws the overlay (unless
overlay=false; overlay-style=regions colours only the defect regions, heat blends the whole heat map),
attaches a GstVideoRegionOfInterestMeta (type "anomaly", with an "mmad" parameter structure holding
the score) per anomalous region, and posts an element message named "mmad-inspection" on the bus:
frame, pts, score, threshold, pixel_threshold, anomalous, error (empty, or why the frame could not be scored:
a non-finite score, which makes it anomalous), regions (strict JSON). The thresholds come from
`calibration` (default: MODEL.calibration.json beside the model when it exists, else the model's
metadata), for `category` when set, unless `threshold` overrides the image threshold; an info
message at start says which. Inference runs in the element's streaming thread, as in any filter:
put a leaky queue before it on live sources so the camera never waits for the model.

Loaded by gst-python's plugin loader from runtime/gst_plugin/python/mmadinfer.py, which needs the
PyGObject Gst overrides (see gst_util.plugin_environment).
"""

from __future__ import annotations

import json

import gi
import numpy as np

gi.require_version("Gst", "1.0")
gi.require_version("GstBase", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import GLib, GObject, Gst, GstBase, GstVideo  # noqa: E402

from .backends import load_backend  # noqa: E402
from .errors import ConfigError  # noqa: E402
from .events import finite_or_null  # noqa: E402
from .inspector import FrameInspector  # noqa: E402
from .processing import OVERLAY_STYLES, parse_roi  # noqa: E402

CAPS = Gst.Caps.from_string("video/x-raw,format=RGB")
MESSAGE_NAME = "mmad-inspection"


class MmadInfer(GstBase.BaseTransform):
    __gtype_name__ = "GstMmadInfer"
    __gstmetadata__ = (
        "MMAD anomaly inspection",
        "Filter/Analyzer/Video",
        "Scores each frame with an MMAD anomaly model, draws the heat map and reports anomalous regions",
        "MMAD Edge",
    )
    __gsttemplates__ = (
        Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, CAPS),
        Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, CAPS),
    )
    __gproperties__ = {
        "model": (str, "model", "Exported model: .onnx or a TensorRT engine", None, GObject.ParamFlags.READWRITE),
        "backend": (
            str,
            "backend",
            "auto, tensorrt, openvino, openvino-fp16, onnxruntime, onnxruntime-cpu, ...",
            "auto",
            GObject.ParamFlags.READWRITE,
        ),
        "threshold": (
            float,
            "threshold",
            "Anomaly threshold; negative: the model's metadata",
            -1.0,
            1e30,
            -1.0,
            GObject.ParamFlags.READWRITE,
        ),
        "calibration": (
            str,
            "calibration",
            "Calibration file from mmad calibrate (empty: MODEL.calibration.json when it exists, else the metadata)",
            None,
            GObject.ParamFlags.READWRITE,
        ),
        "category": (
            str,
            "category",
            "Product category whose thresholds to use (empty: the model's or calibration's own)",
            None,
            GObject.ParamFlags.READWRITE,
        ),
        "roi": (
            str,
            "roi",
            "Region of interest x,y,w,h in pixels (empty: the whole frame)",
            None,
            GObject.ParamFlags.READWRITE,
        ),
        "overlay": (
            bool,
            "overlay",
            "Draw the overlay (see overlay-style), boxes and score on the frame",
            True,
            GObject.ParamFlags.READWRITE,
        ),
        "overlay-style": (
            str,
            "overlay-style",
            "regions: colour only the defect regions; heat: blend the whole heat map",
            "regions",
            GObject.ParamFlags.READWRITE,
        ),
        "min-region-area": (
            int,
            "min-region-area",
            "Smallest anomalous region reported, in pixels",
            1,
            1 << 30,
            16,
            GObject.ParamFlags.READWRITE,
        ),
    }

    def __init__(self) -> None:
        super().__init__()
        self.set_in_place(True)
        self.props_ = {
            "model": None,
            "backend": "auto",
            "threshold": -1.0,
            "calibration": None,
            "category": None,
            "roi": None,
            "overlay": True,
            "overlay-style": OVERLAY_STYLES[0],
            "min-region-area": 16,
        }
        self.inspector: FrameInspector | None = None
        self.width = self.height = 0
        self.frame_index = 0

    def do_get_property(self, prop):
        return self.props_[prop.name]

    def do_set_property(self, prop, value):
        self.props_[prop.name] = value

    def do_start(self) -> bool:
        """Load the model when the pipeline starts; a bad model is an element error naming it."""
        try:
            if not self.props_["model"]:
                raise ConfigError("mmadinfer: set the model property (model=path/to/model.onnx)")
            props = self.props_
            backend = load_backend(
                props["model"],
                props["backend"],
                calibration=props["calibration"] or None,
                category=props["category"] or None,
            )
            threshold = props["threshold"] if props["threshold"] >= 0 else None
            roi = parse_roi(props["roi"]) if props["roi"] else None
            self.inspector = FrameInspector(backend, threshold, roi, props["min-region-area"], props["overlay-style"])
        except ConfigError as err:
            error = GLib.Error.new_literal(Gst.ResourceError.quark(), str(err), int(Gst.ResourceError.NOT_FOUND))
            self.post_message(Gst.Message.new_error(self, error, str(err)))
            return False
        # An info message saying where the thresholds came from (gst-launch-1.0 prints its debug text).
        thresholds = f"mmadinfer: {self.inspector.describe_thresholds()}"
        info = GLib.Error.new_literal(Gst.CoreError.quark(), thresholds, int(Gst.CoreError.FAILED))
        self.post_message(Gst.Message.new_info(self, info, thresholds))
        self.frame_index = 0
        return True

    def do_stop(self) -> bool:
        if self.inspector is not None:
            self.inspector.backend.close()
            self.inspector = None
        return True

    def do_set_caps(self, incaps, outcaps) -> bool:
        s = incaps.get_structure(0)
        self.width, self.height = s.get_int("width")[1], s.get_int("height")[1]
        return True

    def do_transform_ip(self, buf):
        stride = (self.width * 3 + 3) & ~3  # GStreamer's default row padding for RGB
        flags = Gst.MapFlags.READ | (Gst.MapFlags.WRITE if self.props_["overlay"] else 0)
        with buf.map(flags) as info:
            rows = np.ndarray((self.height, stride), np.uint8, buffer=info.data)
            frame = rows[:, : self.width * 3].reshape(self.height, self.width, 3)
            result = self.inspector.inspect(np.ascontiguousarray(frame))
            if self.props_["overlay"]:
                frame[:] = self.inspector.overlay(frame, result)
        for r in result.regions:
            meta = GstVideo.buffer_add_video_region_of_interest_meta(buf, "anomaly", r.x, r.y, r.w, r.h)
            meta.add_param(Gst.Structure.new_from_string(f"mmad, score=(double){result.score}, peak=(double){r.peak}"))
        self._post_result(buf, result)
        self.frame_index += 1
        return Gst.FlowReturn.OK

    def _post_result(self, buf, result) -> None:
        s = Gst.Structure.new_empty(MESSAGE_NAME)
        s.set_value("frame", GObject.Value(GObject.TYPE_UINT64, self.frame_index))
        s.set_value("pts", GObject.Value(GObject.TYPE_UINT64, buf.pts))
        s.set_value("score", float(result.score))
        s.set_value("threshold", float(result.threshold))
        s.set_value("pixel_threshold", float(result.pixel_threshold))
        s.set_value("anomalous", bool(result.anomalous))  # True for a non-finite score too (fail closed)
        s.set_value("error", result.error or "")  # why the verdict is not the model's (a non-finite score)
        s.set_value("regions", json.dumps(finite_or_null([r.as_dict() for r in result.regions]), allow_nan=False))
        self.post_message(Gst.Message.new_element(self, s))


GObject.type_register(MmadInfer)
__gstelementfactory__ = ("mmadinfer", Gst.Rank.NONE, MmadInfer)
