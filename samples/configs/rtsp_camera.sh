#!/usr/bin/env bash
# Inspect an RTSP camera (an IP camera, an NVR channel, or rtsp_test_server.py) with MMAD.
#
#   RTSP_URL=rtsp://192.168.1.64:554/Streaming/Channels/101 MODEL=model.onnx bash samples/configs/rtsp_camera.sh
#   DRY_RUN=1 MODEL=model.onnx bash samples/configs/rtsp_camera.sh    # print the commands only
#
# Try it without a camera: serve a video over RTSP in one terminal,
#   python samples/configs/rtsp_test_server.py runs/quickstart/inspection.avi     # rtsp://127.0.0.1:8554/inspection
# and run this script with RTSP_URL=rtsp://127.0.0.1:8554/inspection in another.
#
# Credentials: put them in the URL from the environment (RTSP_URL=rtsp://user:pass@host/...), not in this file.
# The stream reconnects with back-off when the camera drops out (network loss, camera reboot); every
# reconnect is logged and counted in the stats.
set -euo pipefail

MODEL="${MODEL:?set MODEL to an exported model: .engine (TensorRT) or .onnx}"
RTSP_URL="${RTSP_URL:-rtsp://127.0.0.1:8554/inspection}"
OUT_DIR="${OUT_DIR:-runs/rtsp}"
ROI="${ROI:-}"                              # x,y,w,h in frame pixels; empty: the whole frame
RECONNECTS="${RECONNECTS:--1}"              # consecutive reconnect attempts before giving up; -1: never
RECORD="${RECORD:-}"                        # a path ending .mp4/.mkv: also record the annotated stream

run() { echo "+ $*"; if [ -z "${DRY_RUN:-}" ]; then "$@"; fi; }

# 1. The camera alone, 100 frames over TCP, no model: proves the URL, the credentials and the codec.
#    (mmad stream uses the same rtspsrc settings: TCP transport, 100 ms jitter buffer.)
run gst-launch-1.0 -q rtspsrc location="$RTSP_URL" protocols=tcp latency=100 ! decodebin ! fakesink num-buffers=100

# 2. The inspection. Events are JSON lines (one per anomalous frame) for a log shipper or an MQTT bridge.
ARGS=(--model "$MODEL" --source "$RTSP_URL" --events "$OUT_DIR/events.jsonl" --save-anomalies "$OUT_DIR/anomalies"
      --stats-json "$OUT_DIR/stats.json" --stats-interval 30 --reconnect-attempts "$RECONNECTS")
[ -n "$ROI" ] && ARGS+=(--roi "$ROI")
[ -n "$RECORD" ] && ARGS+=(--out "$RECORD")
[ -n "${DRY_RUN:-}" ] || mkdir -p "$OUT_DIR/anomalies"
run mmad stream "${ARGS[@]}"
