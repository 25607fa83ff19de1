"""Sources and sinks named by URI, mapped to GStreamer pipeline descriptions in one place.

Sources (`mmad stream --source`):
    test, test://PATTERN        videotestsrc (a live test pattern; PATTERN e.g. ball, smpte)
    PATH, file:///PATH          a video file (any container/codec decodebin knows: mp4 H.264, mkv, avi MJPEG ...)
    http(s)://...               a video over HTTP (uridecodebin)
    rtsp://HOST[:PORT]/PATH     an RTSP camera; reconnects with back-off when the stream is lost
    /dev/videoN, v4l2:///dev/videoN, v4l2://N
                                a V4L2 camera (USB / UVC)
    csi://N                     a Jetson CSI camera (nvarguscamerasrc sensor-id=N)

On a Jetson (nvvidconv and nvv4l2decoder present) decodebin picks nvv4l2decoder by rank, nvvidconv
takes frames out of NVMM memory and the annotated output is encoded with nvv4l2h264enc; elsewhere
videoconvert and x264enc do that work.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .errors import ConfigError

SOURCE_HELP = (
    "test[://PATTERN] | PATH | file:///PATH | http(s)://URL | rtsp://HOST/PATH | /dev/videoN | v4l2://N | csi://N"
)
# decodebin also decodes audio; the caps filter after it links its video pad only.
VIDEO_ONLY = "video/x-raw(ANY)"
DECODE = f"decodebin name=decoder ! {VIDEO_ONLY}"
OUTPUT_MUXERS = {".mp4": "mp4mux", ".mkv": "matroskamux", ".mov": "qtmux"}
# The recording survives a kill or a power cut but for its last fragment: MP4/MOV are written as fragments of
# FRAGMENT_MS (a header first, then self-contained pieces, playable without the index a clean stop writes;
# where mp4mux knows fragment-mode, a clean stop then finalises the file into a plain MP4); Matroska is
# written in clusters of about half a second anyway (matroskamux's min-cluster-duration). filesink writes
# each piece at once instead of holding 64 kB back.
FRAGMENT_MS = 1000
FRAGMENTED = {"mp4mux": f"fragment-duration={FRAGMENT_MS}", "qtmux": f"fragment-duration={FRAGMENT_MS}"}
FINALISE = "fragment-mode=first-moov-then-finalise"  # GStreamer >= 1.20
X264ENC = "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30"  # the software encoder: low latency


@dataclass(frozen=True)
class SourceSpec:
    """A parsed --source: its kind, where it is, and how the stream treats it."""

    kind: str  # "test", "file", "uri", "rtsp", "v4l2", "csi"
    location: str  # path, URI, device or sensor id; the pattern for "test"
    text: str  # as the user wrote it, for events and logs

    @property
    def live(self) -> bool:
        """Live sources produce frames in real time: the stream keeps only the newest one (drops the rest)."""
        return self.kind in ("test", "rtsp", "v4l2", "csi")

    @property
    def reconnects(self) -> bool:
        """Network cameras come back after a loss; the stream rebuilds the source with back-off."""
        return self.kind == "rtsp"


def parse_source(text: str) -> SourceSpec:
    """--source text -> SourceSpec; ConfigError for a missing file/device or an unsupported URI scheme."""
    if text == "test" or text.startswith("test://"):
        return SourceSpec("test", text.partition("://")[2] or "ball", text)
    url = urlparse(text)
    scheme = url.scheme.lower()
    if scheme in ("rtsp", "rtsps", "rtspt"):
        if not url.hostname:
            raise ConfigError(f"--source {text}: an RTSP URI needs a host, e.g. rtsp://192.168.1.10:8554/stream")
        return SourceSpec("rtsp", text, text)
    if scheme in ("http", "https"):
        return SourceSpec("uri", text, text)
    if scheme == "csi":
        sensor = url.netloc or url.path.strip("/") or "0"
        if not sensor.isdigit():
            raise ConfigError(f"--source {text}: expected csi://N with a sensor number N")
        return SourceSpec("csi", sensor, text)
    if scheme == "v4l2":
        rest = url.netloc + url.path
        device = f"/dev/video{rest}" if rest.isdigit() else rest
        return SourceSpec("v4l2", _existing(device, text, "no such camera device"), text)
    if scheme == "file":
        return SourceSpec("file", _existing(url.path, text, "no such file"), text)
    if scheme and len(scheme) > 1:  # (a one-letter scheme is a Windows drive letter, i.e. a path)
        raise ConfigError(f"--source {text}: unsupported URI scheme {scheme!r}; expected {SOURCE_HELP}")
    if text.startswith("/dev/video"):
        return SourceSpec("v4l2", _existing(text, text, "no such camera device"), text)
    return SourceSpec("file", _existing(text, text, "no such file"), text)


def _existing(path: str, text: str, what: str) -> str:
    """The path, once it names something to read frames from: not missing, not a folder, not an empty file."""
    found = Path(path)
    if not found.exists():
        raise ConfigError(f"--source {text}: {what}")
    if found.is_dir():
        raise ConfigError(f"--source {text}: is a folder; expected a video file, a camera device or a URI")
    if found.is_file() and found.stat().st_size == 0:
        raise ConfigError(f"--source {text}: the file is empty (0 bytes); expected a video")
    return str(found.resolve()) if not path.startswith("/dev/") else path


def connection_problem(spec: SourceSpec, timeout_s: float = 5.0) -> str | None:
    """For a network source, why its server cannot be reached ("cannot connect to host:554 (Connection
    refused)"), or None (reachable, or not a network source). GStreamer reports a refused connection only as
    "Internal data stream error", so the stream asks this after a network source failed."""
    if spec.kind not in ("uri", "rtsp"):
        return None
    url = urlparse(spec.location)
    default_port = {"https": 443, "http": 80}.get(url.scheme.lower(), 554)
    try:
        port = url.port or default_port
        socket.create_connection((url.hostname, port), timeout=timeout_s).close()
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        return f"cannot connect to {url.hostname}:{url.port or default_port} ({reason})"
    return None


@dataclass(frozen=True)
class Platform:
    """Which optional elements this machine has; decides the Jetson or the desktop pipeline."""

    nvvidconv: bool = False
    nvv4l2decoder: bool = False
    nvv4l2h264enc: bool = False
    nvarguscamerasrc: bool = False
    nv3dsink: bool = False

    @property
    def jetson(self) -> bool:
        return self.nvvidconv and self.nvv4l2decoder


def detect_platform() -> Platform:
    """Look the Jetson elements up in this machine's GStreamer registry."""
    from .gst_util import have_element

    return Platform(**{name: have_element(name) for name in Platform.__dataclass_fields__})


def _quote(value: str) -> str:
    """A property value for gst_parse_launch, quoted so spaces and '!' in paths survive."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def source_description(spec: SourceSpec, platform: Platform) -> str:
    """The pipeline fragment that produces decoded video (any raw format, maybe NVMM) from the source."""
    if spec.kind == "test":
        return f"videotestsrc is-live=true pattern={spec.location} ! video/x-raw,width=640,height=480,framerate=30/1"
    if spec.kind == "file":
        return f"filesrc location={_quote(spec.location)} ! {DECODE}"
    if spec.kind == "uri":
        return f"uridecodebin uri={_quote(spec.location)} name=decoder ! {VIDEO_ONLY}"
    if spec.kind == "rtsp":
        # TCP interleaved transport survives NAT and packet loss better than UDP; latency is rtspsrc's
        # jitter buffer in ms.
        return f"rtspsrc location={_quote(spec.location)} latency=100 protocols=tcp ! {DECODE}"
    if spec.kind == "v4l2":
        return f"v4l2src device={_quote(spec.location)} ! {DECODE}"
    if spec.kind == "csi":
        if not platform.nvarguscamerasrc:
            raise ConfigError(f"--source {spec.text}: CSI cameras need nvarguscamerasrc (a Jetson with JetPack)")
        return f"nvarguscamerasrc sensor-id={spec.location} ! video/x-raw(memory:NVMM),framerate=30/1"
    raise ConfigError(f"--source {spec.text}: unsupported source kind {spec.kind!r}")


def to_rgb_description(platform: Platform) -> str:
    """Decoded video -> system-memory RGB, the model's colour order (nvvidconv leaves NVMM first on a Jetson)."""
    if platform.jetson:
        return "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=RGB"
    return "videoconvert ! video/x-raw,format=RGB"


def input_pipeline_description(spec: SourceSpec, platform: Platform) -> str:
    """Source -> leaky queue -> RGB -> appsink.

    Live sources: the queue and appsink keep only the newest frame (drop=true max-buffers=1), so the
    result always describes what the camera sees now. Files: nothing is dropped; the decoder waits
    for inference (every frame gets a verdict). sync=false: frames go to inference as soon as decoded.
    """
    leak = "leaky=downstream max-size-buffers=2 max-size-bytes=0 max-size-time=0" if spec.live else "max-size-buffers=4"
    drop = "true" if spec.live else "false"
    return (
        f"{source_description(spec, platform)} ! queue name=inqueue {leak} ! {to_rgb_description(platform)} "
        f"! appsink name=frames drop={drop} max-buffers=1 sync=false emit-signals=false"
    )


def output_muxer(out: str) -> str:
    """The muxer element for an --out file, from its suffix; ConfigError for a container the stream cannot write."""
    suffix = Path(out).suffix.lower()
    if suffix not in OUTPUT_MUXERS:
        raise ConfigError(f"--out {out}: unsupported container {suffix!r}; expected one of {', '.join(OUTPUT_MUXERS)}")
    return OUTPUT_MUXERS[suffix]


def recording_muxer(out: str, finalise: bool) -> str:
    """The muxer of an --out file with its crash-safe settings (FRAGMENTED); finalise: mp4mux/qtmux have
    fragment-mode (GStreamer >= 1.20), so a clean stop turns the fragments into a plain file."""
    muxer = output_muxer(out)
    if muxer not in FRAGMENTED:
        return muxer
    return f"{muxer} {FRAGMENTED[muxer]}{f' {FINALISE}' if finalise else ''}"


def output_pipeline_description(
    out: str | None, display: bool, caps: str, platform: Platform, finalise: bool = False
) -> str:
    """appsrc (annotated RGB frames, `caps`) -> encoder -> crash-safe file (recording_muxer), and/or -> a display."""
    branches = []
    if out:
        muxer = recording_muxer(out, finalise)
        if platform.nvv4l2h264enc and platform.nvvidconv:
            encode = "nvvidconv ! video/x-raw(memory:NVMM),format=I420 ! nvv4l2h264enc insert-sps-pps=true"
        else:
            encode = f"videoconvert ! video/x-raw,format=I420 ! {X264ENC}"
        branches.append(
            f"queue ! {encode} ! h264parse ! {muxer} ! filesink buffer-mode=unbuffered location={_quote(out)}"
        )
    if display:
        sink = "nv3dsink" if platform.nv3dsink else "autovideosink"
        branches.append(f"queue leaky=downstream max-size-buffers=2 ! videoconvert ! {sink} sync=false")
    if not branches:
        raise ValueError("output pipeline without --out or --display")
    head = f"appsrc name=annotated is-live=true format=time caps={_quote(caps)}"
    if len(branches) == 1:
        return f"{head} ! {branches[0]}"
    return f"{head} ! tee name=split " + " ".join(f"split. ! {b}" for b in branches)
