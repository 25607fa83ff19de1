#!/usr/bin/env bash
# One short GPU check of the selective-scan kernel, for a machine with a CUDA GPU, PyTorch, CMake and nvcc
# (TensorRT not needed): builds libmmad_selective_scan.so for this GPU, runs the gpu tests against the
# float64 reference, then the benchmark. Logs and results go to $OUT (default plugins/build/gpu_check):
# env.txt, build.log, pytest.log, bench.log, bench.json, bench.md.
#
#   bash plugins/selective_scan/gpu_check.sh
#
# Exits non-zero if any step failed; every step runs regardless, so one failure still leaves the others' logs.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT_DIR="${OUT:-plugins/build/gpu_check}"
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
status=0

step() {  # step NAME LOG COMMAND...: run, tee to LOG, remember a failure
    local name=$1 log=$2
    shift 2
    echo "=== $name"
    "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "=== $name FAILED (exit $rc)"; status=1; }
    return "$rc"
}

# The project's package (mmad.plugins.selective_scan holds the reference and the ctypes path); its package-dir
# mapping needs pip, and a PYTHONPATH shim of symlinks serves where pip cannot install.
if ! "$PY" -m pip install -q --no-deps --no-build-isolation -e . >"$OUT_DIR/pip.txt" 2>&1; then
    shim=$(mktemp -d)/site
    mkdir -p "$shim/mmad"
    for pkg in training export runtime samples plugins; do ln -s "$PWD/$pkg" "$shim/mmad/$pkg"; done
    export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}"
    echo "pip install -e . failed (see pip.txt in the log); using PYTHONPATH=$shim" | tee -a "$OUT_DIR/pip.txt"
fi

# nvcc need not be on PATH (a stock JetPack shell): the build finds it as CMake does ($CUDACXX, PATH,
# $CUDA_HOME/bin, /usr/local/cuda/bin, /opt/cuda/bin).
NVCC=$("$PY" -c "from mmad.plugins.selective_scan.build import find_nvcc; print(find_nvcc() or '')")
[ -n "$NVCC" ] || { echo "no CUDA compiler: nvcc is not on PATH, in \$CUDA_HOME/bin, /usr/local/cuda/bin or /opt/cuda/bin, and CUDACXX is not set"; exit 1; }
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    "$NVCC" --version 2>&1 | tail -2
    cmake --version 2>&1 | head -1
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" 2>&1
    cat "$OUT_DIR/pip.txt"
} >"$OUT_DIR/env.txt"
rm -f "$OUT_DIR/pip.txt"
cat "$OUT_DIR/env.txt"

# MMAD_CUDA_ARCH overrides the GPU's own compute capability (e.g. to dry-run the script without a GPU).
ARCH=${MMAD_CUDA_ARCH:-$("$PY" -c "import torch; print(''.join(map(str, torch.cuda.get_device_capability(0))))")} || {
    echo "no CUDA GPU visible to PyTorch"; exit 1; }
BUILD_DIR="plugins/build/gpu-sm$ARCH"
LIB="$BUILD_DIR/selective_scan/libmmad_selective_scan.so"

step build "$OUT_DIR/build.log" "$PY" -m mmad.plugins.selective_scan.build \
    --build-dir "$BUILD_DIR" --archs "$ARCH" --cuda ON --trt-plugin AUTO \
    --targets mmad_selective_scan selective_scan_host_harness || exit 1

export MMAD_SCAN_LIB="$PWD/$LIB"
step gpu-tests "$OUT_DIR/pytest.log" \
    "$PY" -m pytest tests/plugins/test_cuda_kernel_gpu.py -q -p no:cacheprovider -o addopts="" -rs

step bench "$OUT_DIR/bench.log" "$PY" -m mmad.plugins.selective_scan.bench_cuda --lib "$LIB" --batches 1 8 \
    --out-json "$OUT_DIR/bench.json" --out-md "$OUT_DIR/bench.md"

echo "=== done (status $status); results in $OUT_DIR"
exit "$status"
