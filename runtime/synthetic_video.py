"""A generated inspection video: a textured part under a camera, with defects in known frames.

Each frame shows a grey textured surface with a round part on it, drifting a few pixels (a
conveyor that never quite stops) under sensor noise. Defect frames add a dark scratch or stain on
the part. Everything normal stays within +-30 grey levels of mid-grey (128); defects are far
darker, so a model that measures the distance to mid-grey separates them (runtime/synthetic.py).

    frames = render_frames(8, (640, 480), defect_frames=[1, 3], seed=0)   # (RGB frame, Defect | None)
    defects = make_video("sample.mp4", n_frames=60, fps=15, size=(320, 240), defect_frames=[12, 30, 47])

make_video writes sample.mp4 (H.264 in MP4 through GStreamer's x264enc; a path ending in .avi gets
MJPEG through OpenCV instead) and sample.json, the ground truth:
{"video", "n_frames", "fps", "size", "seed", "defect_frames", "defects": [{"frame", "kind", "box"}]}.

It lives in the runtime because the benchmarks feed it to the backends and the stream when no
images or video are given (`mmad bench`, python -m mmad.runtime.bench.stream_fps); the sample's
command line is python -m mmad.samples.make_video, a thin shell over this module. decodable_frames(path)
counts what OpenCV's FFmpeg decodes of a video, to check one independently of GStreamer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MID_GREY = 128
TEXTURE_AMPLITUDE = 12.0  # grey levels; with the part (+-12) and noise normal pixels stay within +-30
PART_AMPLITUDE = 12.0
NOISE_SIGMA = 1.5
DRIFT_PX = 4  # how far the scene drifts from its mean position


@dataclass(frozen=True)
class Defect:
    frame: int
    kind: str  # "scratch" or "stain"
    box: tuple[int, int, int, int]  # x, y, w, h in frame pixels

    def as_dict(self) -> dict[str, object]:
        return {"frame": self.frame, "kind": self.kind, "box": list(self.box)}


def _texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth surface texture in [-1, 1], float32 [height, width] (blurred noise, like brushed metal)."""
    noise = rng.standard_normal((height, width)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigmaX=6.0, sigmaY=2.0)
    return smooth / max(float(np.abs(smooth).max()), 1e-6)


def _scene(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """The static scene, larger than a frame by DRIFT_PX on each side: float32 [H + 2d, W + 2d, 3] grey levels."""
    d = DRIFT_PX
    big_w, big_h = width + 2 * d, height + 2 * d
    grey = MID_GREY + TEXTURE_AMPLITUDE * _texture(rng, big_w, big_h)
    part = np.zeros((big_h, big_w), np.float32)
    centre, radius = (big_w // 2, big_h // 2), int(min(width, height) * 0.35)
    cv2.circle(part, centre, radius, 1.0, -1, cv2.LINE_AA)  # a lighter face ...
    cv2.circle(part, centre, radius, -1.0, 6, cv2.LINE_AA)  # ... with a darker rim
    part = cv2.GaussianBlur(part, (0, 0), 1.5)
    scene = np.repeat((grey + PART_AMPLITUDE * part)[:, :, None], 3, axis=2)
    scene += np.array([-3.0, 2.0, 1.0], np.float32)  # a faint tint, as real lighting has
    return scene


def _drift(index: int, n_frames: int) -> tuple[int, int]:
    """The scene's offset in frame `index`: a slow ellipse of radius DRIFT_PX."""
    angle = 2 * np.pi * index / max(n_frames, 1)
    return int(round(DRIFT_PX * (1 + np.cos(angle)))), int(round(DRIFT_PX * (1 + np.sin(angle))))


def _add_defect(frame: np.ndarray, rng: np.random.Generator, index: int) -> Defect:
    """Draw a dark scratch or stain on the part, in place; returns where it is."""
    h, w = frame.shape[:2]
    cx, cy = w // 2 + int(rng.integers(-w // 8, w // 8)), h // 2 + int(rng.integers(-h // 8, h // 8))
    if rng.random() < 0.5:
        length, angle = int(rng.integers(min(w, h) // 4, min(w, h) // 3)), rng.uniform(0, np.pi)
        dx, dy = int(length / 2 * np.cos(angle)), int(length / 2 * np.sin(angle))
        p0, p1 = (cx - dx, cy - dy), (cx + dx, cy + dy)
        cv2.line(frame, p0, p1, (25, 22, 20), 6, cv2.LINE_AA)
        x0, y0 = min(p0[0], p1[0]) - 3, min(p0[1], p1[1]) - 3
        return Defect(index, "scratch", (x0, y0, abs(p1[0] - p0[0]) + 7, abs(p1[1] - p0[1]) + 7))
    axes = (int(rng.integers(10, 18)), int(rng.integers(7, 12)))
    cv2.ellipse(frame, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, (60, 40, 25), -1, cv2.LINE_AA)
    return Defect(index, "stain", (cx - axes[0], cy - axes[0], 2 * axes[0] + 1, 2 * axes[0] + 1))


def render_frames(n_frames: int, size: tuple[int, int], defect_frames: list[int], seed: int):
    """Yield (frame uint8 RGB [h, w, 3], Defect or None) for each frame index."""
    width, height = size
    rng = np.random.default_rng(seed)
    scene = _scene(width, height, rng)
    wanted = set(defect_frames)
    for i in range(n_frames):
        ox, oy = _drift(i, n_frames)
        frame = scene[oy : oy + height, ox : ox + width] + rng.normal(0.0, NOISE_SIGMA, (height, width, 3))
        frame = np.clip(frame, 0, 255).astype(np.uint8)
        yield frame, (_add_defect(frame, rng, i) if i in wanted else None)


def _write_gstreamer(path: Path, frames, fps: int, size: tuple[int, int]) -> list[Defect]:
    """H.264 in MP4 (or MKV) through appsrc ! x264enc."""
    from mmad.runtime.gst_util import import_gst

    Gst = import_gst()
    width, height = size
    mux = "matroskamux" if path.suffix.lower() == ".mkv" else "mp4mux"
    pipeline = Gst.parse_launch(
        f'appsrc name=src format=time caps="video/x-raw,format=RGB,width={width},height={height},framerate={fps}/1" '
        f"! videoconvert ! video/x-raw,format=I420 ! x264enc speed-preset=ultrafast tune=zerolatency key-int-max={fps} "
        f'! h264parse ! {mux} ! filesink location="{path}"'
    )
    src = pipeline.get_by_name("src")
    src.set_property("block", True)
    pipeline.set_state(Gst.State.PLAYING)
    defects, stride = [], (width * 3 + 3) & ~3
    for i, (frame, defect) in enumerate(frames):
        rows = np.zeros((height, stride), np.uint8)
        rows[:, : width * 3] = frame.reshape(height, -1)
        buf = Gst.Buffer.new_wrapped(rows.tobytes())
        buf.pts, buf.duration = i * Gst.SECOND // fps, Gst.SECOND // fps
        src.push_buffer(buf)
        if defect:
            defects.append(defect)
    src.end_of_stream()
    msg = pipeline.get_bus().timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    if msg is None or msg.type == Gst.MessageType.ERROR:
        raise RuntimeError(f"{path}: writing the video failed: {msg.parse_error()[0].message if msg else 'timeout'}")
    return defects


def _write_opencv(path: Path, frames, fps: int, size: tuple[int, int]) -> list[Defect]:
    """MJPEG in AVI through OpenCV (every OpenCV build can write it)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write MJPEG/AVI here")
    defects = []
    for frame, defect in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        if defect:
            defects.append(defect)
    writer.release()
    return defects


def _gstreamer_works() -> bool:
    try:
        from mmad.runtime.gst_util import gst_unavailable_reason, missing_elements
    except ImportError:
        return False
    return gst_unavailable_reason() is None and not missing_elements(["x264enc", "mp4mux", "h264parse"])


def make_video(
    path: str | Path,
    n_frames: int = 60,
    fps: int = 15,
    size: tuple[int, int] = (320, 240),
    defect_frames: list[int] | None = None,
    seed: int = 0,
) -> list[int]:
    """Write the sample video and its ground truth JSON (same path, .json); return the defect frame indices.

    size: (width, height), even numbers. defect_frames: indices in [0, n_frames); default one frame
    in ten, chosen with `seed`. .mp4/.mkv are H.264 through GStreamer; .avi is MJPEG through OpenCV.
    """
    path = Path(path)
    width, height = size
    if width % 2 or height % 2 or width < 64 or height < 64:
        raise ValueError(f"size {size}: expected even width and height of at least 64")
    if defect_frames is None:
        rng = np.random.default_rng(seed + 1)
        defect_frames = sorted(rng.choice(np.arange(1, n_frames), size=max(n_frames // 10, 1), replace=False).tolist())
    bad = [i for i in defect_frames if not 0 <= i < n_frames]
    if bad:
        raise ValueError(f"defect_frames {bad}: outside 0..{n_frames - 1}")
    defect_frames = sorted(set(int(i) for i in defect_frames))
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = render_frames(n_frames, size, defect_frames, seed)
    suffix = path.suffix.lower()
    if suffix == ".avi":
        defects = _write_opencv(path, frames, fps, size)
    elif suffix in (".mp4", ".mkv"):
        if not _gstreamer_works():
            raise RuntimeError(
                f"{path}: H.264 needs GStreamer with x264enc, h264parse and mp4mux; write an .avi (MJPEG) instead"
            )
        defects = _write_gstreamer(path, frames, fps, size)
    else:
        raise ValueError(f"{path}: expected .mp4, .mkv or .avi")
    truth = {
        "video": path.name,
        "n_frames": n_frames,
        "fps": fps,
        "size": [width, height],
        "seed": seed,
        "defect_frames": defect_frames,
        "defects": [d.as_dict() for d in defects],
    }
    path.with_suffix(".json").write_text(json.dumps(truth, indent=2))
    return defect_frames


def decodable_frames(path: str | Path) -> int:
    """How many frames of a video OpenCV's FFmpeg decodes: a check independent of the GStreamer that wrote it (the
    generated videos, a recording the stream wrote, one a killed run left behind)."""
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count
