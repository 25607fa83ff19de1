"""Build a TensorRT engine from an exported ONNX graph, with the SelectiveScan plugin loaded.

    python export/to_trt.py --onnx model.onnx --out model.engine [--precision fp32|fp16|int8]
        [--plugin-library libmmad_trt_plugins.so] [--calib-data DIR ...] [--batch MIN,OPT,MAX] [--workspace MB]
        [--timing-cache FILE]

Writes the engine and its sidecar `<engine>.json` (TensorRT version, GPU, precision, plugin hash,
input shapes, threshold, metadata). TensorRT 10.x and 11.x; see mmad.export.trt_engine. The plugin
library is --plugin-library, else $MMAD_TRT_PLUGIN, else the installed one (/opt/mmad/lib); it is
never serialised into the engine. Rebuilds reuse the kernel timings in the timing cache (default
tensorrt_timing.cache beside the engine). The options are EngineRequest's
(mmad.export.command); `mmad export trt` takes the same.
Exit codes: 0 built; 2 bad request or environment (no TensorRT, no GPU, plugin missing or for
another TensorRT, ONNX missing/corrupt/without metadata, INT8 without calibration data);
1 TensorRT failed to parse or build.
"""

from __future__ import annotations

import sys

from mmad.export.command import EngineRequest, Script


def build(request: EngineRequest) -> int:
    from mmad.export.trt_engine import EngineBuildError, build_engine, check_request

    try:
        sidecar = build_engine(check_request(request))
    except EngineBuildError as err:
        print(f"to_trt: error: {err}", file=sys.stderr)
        return 1
    print(
        f"wrote {request.out} ({sidecar.precision}, TensorRT {sidecar.tensorrt_version}, {sidecar.gpu}) "
        f"and {request.out}.json"
    )
    return 0


SCRIPT = Script("to_trt", __doc__, EngineRequest, build)

if __name__ == "__main__":
    sys.exit(SCRIPT.main())
