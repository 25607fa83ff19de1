#!/usr/bin/env bash
# Installs MMAD Edge on a fresh Debian 12 / Ubuntu 22.04+ x86-64 machine, into ./.venv:
#   - system packages: GStreamer (runtime video pipeline), PyGObject's build deps, a C++ compiler
#     (the selective scan's CPU kernel is compiled on first use), cmake (the CUDA plugin);
#   - PyTorch 2.13.0, CPU build (on the project's dev/CI machines pip takes it from local disk; on a
#     GPU workstation install the CUDA build of torch into .venv first and pip keeps it);
#   - the project, editable, with every extra: train, export, runtime, openvino, gst, dev.
# A Jetson needs only `pip install .[runtime,gst,tensorrt]` (no PyTorch); see docker/Dockerfile.jetson.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    g++ cmake pkg-config \
    gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly \
    gstreamer1.0-plugins-bad gstreamer1.0-libav gstreamer1.0-rtsp gstreamer1.0-python3-plugin-loader \
    gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-gst-rtsp-server-1.0 python3-gst-1.0 \
    libgirepository1.0-dev libcairo2-dev >/dev/null

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then "$PYTHON" -m venv .venv; fi
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q "torch==2.13.0"
pip install -q -e ".[train,export,runtime,openvino,gst,dev]"
echo "installed into $(pwd)/.venv: activate with '. .venv/bin/activate'"
