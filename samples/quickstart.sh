#!/usr/bin/env bash
# MMAD Edge quickstart: the whole job end to end on generated data, in under 20 minutes on 2 CPU cores.
#
#   bash samples/install.sh            # once: system packages and .venv (see README.md)
#   bash samples/quickstart.sh         # -> runs/quickstart/quickstart.md
#
# Steps (each printed as it runs, as you would type it): generate a dataset, mmad train --preset fast,
# mmad eval, mmad export onnx --portable, an inspection video of the test images and a clip of known-good
# parts, mmad calibrate (the threshold from the known-good clip), mmad stream (annotated mp4 + events.jsonl;
# quickstart.md reports its false alarms and misses), mmad bench (latency report). Options: --out DIR,
# --epochs N, --train-minutes M, --only STEP ...; `bash samples/quickstart.sh --help` lists them. See
# samples/quickstart.py.
set -euo pipefail
# Use the project's .venv (made by samples/install.sh) when no virtual environment is active.
REPO="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$REPO/.venv/bin/activate" ]; then
    # shellcheck disable=SC1091
    . "$REPO/.venv/bin/activate"
fi
exec "${PYTHON:-python3}" -m mmad.samples.quickstart "$@"
