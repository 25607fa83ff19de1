"""Serve a video file (or a test pattern) as an RTSP camera, to try rtsp_camera.sh without a camera.

    python samples/configs/rtsp_test_server.py runs/quickstart/inspection.avi     # rtsp://127.0.0.1:8554/inspection
    python samples/configs/rtsp_test_server.py test --port 8555 --mount cam

The file is decoded and re-encoded as H.264 (as most IP cameras send it) for every client. When it
ends the client sees the stream end; `mmad stream` then reconnects and the file plays again, which
also shows the reconnect path at work. Needs GStreamer's RTSP server bindings
(Debian: gir1.2-gst-rtsp-server-1.0; samples/install.sh installs them). Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def launch_description(source: str, fps: int) -> str:
    """The media pipeline of the server: decoded frames -> H.264 -> RTP payloader `pay0`."""
    if source == "test":
        frames = f"videotestsrc is-live=true ! video/x-raw,width=640,height=480,framerate={fps}/1"
    else:
        path = str(Path(source).resolve()).replace('"', '\\"')
        # videorate paces a file at its own frame rate, like a camera, instead of as fast as it decodes.
        frames = f'filesrc location="{path}" ! decodebin ! videoconvert ! videorate ! video/x-raw,framerate={fps}/1'
    encode = f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps}"
    payload = "rtph264pay name=pay0 pt=96 config-interval=1"
    return f"( {frames} ! videoconvert ! video/x-raw,format=I420 ! {encode} ! {payload} )"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="a video file, or 'test' for a test pattern")
    p.add_argument("--port", default="8554", help="TCP port (default 8554)")
    p.add_argument("--address", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--mount", default="inspection", help="path of the stream (default inspection)")
    p.add_argument("--fps", type=int, default=15, help="frames per second sent (default 15)")
    args = p.parse_args(argv)
    if args.source != "test" and not Path(args.source).is_file():
        p.error(f"{args.source}: no such file")

    import gi

    gi.require_version("Gst", "1.0")
    try:
        gi.require_version("GstRtspServer", "1.0")
    except ValueError:
        sys.exit("GStreamer's RTSP server bindings are missing: apt install gir1.2-gst-rtsp-server-1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_description(args.source, args.fps))
    factory.set_shared(True)  # every client sees the same stream, as with a real camera
    server.get_mount_points().add_factory("/" + args.mount.strip("/"), factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on {args.address}:{args.port}")
    print(f"serving rtsp://{args.address}:{args.port}/{args.mount.strip('/')} (Ctrl-C stops)", flush=True)
    try:
        GLib.MainLoop().run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
