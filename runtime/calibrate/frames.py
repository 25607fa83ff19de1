"""Known-good frames for a calibration, decoded as `mmad stream` decodes them.

    for frame in known_good_frames("good_parts.mp4", timeout=20.0):   # uint8 RGB [H, W, 3]
        ...

A video file, camera or RTSP stream goes through the stream's own input pipeline (stream.pipelines:
source ! decode ! queue ! RGB ! appsink, built from sources.py), so the model sees the pixels it will see
when streaming: the codec's artefacts included, which is why a calibration on site beats a threshold from
training images. A folder of images is read with OpenCV, in name order, without its sub-folders (a dataset's
defect folders must not slip in). The caller stops the iteration when it has enough; the pipeline stops
with it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from mmad.runtime.bench.frames import IMAGE_SUFFIXES
from mmad.runtime.calibrate.config import CalibrationRefused
from mmad.runtime.sources import SourceSpec, detect_platform, parse_source

log = logging.getLogger("mmad.calibrate")

POLL_NS = 50_000_000  # wait for a frame in slices of 50 ms, reading the bus between them


def known_good_frames(source: str, timeout: float) -> Iterator[np.ndarray]:
    """uint8 RGB frames [H, W, 3] from `source` (a folder of images, or anything `mmad stream --source` takes).

    Ends with the source (end of the file or stream). CalibrationRefused when the source fails, or gives no
    frame for `timeout` seconds; ConfigError for a source that does not exist.
    """
    folder = Path(source)
    if folder.is_dir():
        return folder_frames(folder)
    return stream_frames(parse_source(source), timeout)


def folder_frames(folder: Path) -> Iterator[np.ndarray]:
    """The images directly in `folder`, in name order, as uint8 RGB; CalibrationRefused for an unreadable one."""
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise CalibrationRefused(f"--source {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise CalibrationRefused(f"--source {folder}: cannot read {path.name} as an image")
        yield cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def stream_frames(spec: SourceSpec, timeout: float) -> Iterator[np.ndarray]:
    """Frames from the stream's input pipeline until the source ends; refuses a failing or silent source.

    Nothing is retried: a calibration is made from an uninterrupted run of the source, so a lost network
    camera is a refusal rather than a reconnect.
    """
    from mmad.runtime.gst_util import import_gst
    from mmad.runtime.stream.pipelines import InputPipeline, frame_from_sample
    from mmad.runtime.stream.stats import DecodeWatch, FrameClock

    Gst = import_gst()
    clock, watch = FrameClock(), DecodeWatch()
    pipeline = InputPipeline(Gst, spec, detect_platform(), clock, watch)
    last_frame = time.perf_counter()
    try:
        while True:
            for reason, not_video in pipeline.bus_failures(end_of_stream_fails=False):
                what = "the source failed: not a video this machine can play" if not_video else "the source failed"
                raise CalibrationRefused(f"--source {spec.text}: {what} ({reason})")
            sample = pipeline.pull(POLL_NS)
            if sample is None:
                if pipeline.is_eos():
                    return
                if time.perf_counter() - last_frame > timeout:
                    what = "no frame" if clock.count == 0 else "no further frame"
                    raise CalibrationRefused(f"--source {spec.text}: {what} within {timeout:g} s (see --timeout)")
                continue
            decoded = frame_from_sample(sample)
            if decoded is None:
                log.warning("a buffer that is not a whole frame was skipped")
                continue
            frame, pts = decoded
            clock.lookup(pts)  # keeps the clock's pending frames from growing
            last_frame = time.perf_counter()
            yield frame
    finally:
        pipeline.stop()
        if watch.skipped:
            log.warning("%d undecodable frame(s) of %s were skipped by the decoder", watch.skipped, spec.text)
