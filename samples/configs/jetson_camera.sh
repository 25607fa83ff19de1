#!/usr/bin/env bash
# Inspect a Jetson camera with MMAD: a CSI camera (csi://N, nvarguscamerasrc) or a USB one (/dev/videoN).
#
#   MODEL=/models/bottle_fp16.engine bash samples/configs/jetson_camera.sh
#   CAMERA=/dev/video0 MODEL=model.onnx bash samples/configs/jetson_camera.sh
#   DRY_RUN=1 bash samples/configs/jetson_camera.sh      # print the commands only
#
# Inside docker/Dockerfile.jetson's image, give the container the camera (see docker/README.md):
#   --runtime nvidia -v /tmp/argus_socket:/tmp/argus_socket   (CSI: nvargus-daemon runs on the host)
#   --device /dev/video0                                       (USB)
set -euo pipefail

MODEL="${MODEL:?set MODEL to an exported model: .engine (TensorRT) or .onnx}"
CAMERA="${CAMERA:-csi://0}"                 # csi://N, /dev/videoN or v4l2://N
OUT_DIR="${OUT_DIR:-runs/camera}"           # events, saved anomalies, stats
ROI="${ROI:-}"                              # x,y,w,h in frame pixels; empty: the whole frame
THRESHOLD="${THRESHOLD:-}"                  # empty: the model's metadata threshold
PLUGIN="${MMAD_TRT_PLUGIN:-}"               # the SelectiveScan plugin, for an engine whose sidecar does not name it
RECORD="${RECORD:-}"                        # a path ending .mp4/.mkv: also record the annotated stream

run() { echo "+ $*"; if [ -z "${DRY_RUN:-}" ]; then "$@"; fi; }

# 1. Steady figures: the highest power mode and locked clocks (both need root; skipped when not allowed).
#    mmad bench records the mode (nvpmodel -q) and whether clocks are locked in its report.
if [ -z "${DRY_RUN:-}" ] && command -v nvpmodel >/dev/null && [ "$(id -u)" -eq 0 ]; then
    nvpmodel -m 0 && jetson_clocks
fi

# 2. The camera alone, 60 frames, no model: proves the sensor and the NVMM conversion work.
case "$CAMERA" in
    csi://*)
        run gst-launch-1.0 -q nvarguscamerasrc sensor-id="${CAMERA#csi://}" num-buffers=60 \
            ! 'video/x-raw(memory:NVMM),width=1920,height=1080,framerate=30/1' \
            ! nvvidconv ! 'video/x-raw,format=BGRx' ! fakesink ;;
    *)
        DEVICE="$CAMERA"
        case "$DEVICE" in v4l2://*) DEVICE="/dev/video${DEVICE#v4l2://}" ;; esac
        run gst-launch-1.0 -q v4l2src device="$DEVICE" num-buffers=60 ! decodebin ! fakesink ;;
esac

# 3. The inspection: a verdict per frame, an event line per anomalous frame, anomalous frames saved.
#    Live sources keep only the newest frame, so a slow model drops frames instead of falling behind.
ARGS=(--model "$MODEL" --source "$CAMERA" --events "$OUT_DIR/events.jsonl"
      --save-anomalies "$OUT_DIR/anomalies" --stats-json "$OUT_DIR/stats.json" --stats-interval 10)
[ -n "$ROI" ] && ARGS+=(--roi "$ROI")
[ -n "$THRESHOLD" ] && ARGS+=(--threshold "$THRESHOLD")
[ -n "$PLUGIN" ] && ARGS+=(--plugin-library "$PLUGIN")
[ -n "$RECORD" ] && ARGS+=(--out "$RECORD")
[ -n "${DRY_RUN:-}" ] || mkdir -p "$OUT_DIR/anomalies"
run mmad stream "${ARGS[@]}"
