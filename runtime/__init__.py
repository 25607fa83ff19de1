"""MMAD runtime: what an inspection camera runs (numpy, OpenCV, onnxruntime or TensorRT, GStreamer; never torch).

backends.py            Backend interface, load_backend(): onnxruntime (backend_onnxruntime.py) / TensorRT (backend_tensorrt.py)
model_info.py          the model's input spec and threshold, read from its "mmad.*" metadata
processing.py          ROI crop, resize, map -> score, mask, regions, heat-map overlay
inspector.py           FrameInspector: one frame in, one verdict out
events.py              JSON-lines events, flushed per line
sources.py             --source URIs -> GStreamer pipeline descriptions (desktop and Jetson)
stream.py              `mmad stream`: the pipelines, the loop, stats, reconnects, signals
commands.py            the `stream` subcommand for cli.py
gst_element.py         the `mmadinfer` GStreamer element (gst_plugin/python/mmadinfer.py loads it)
gst_util.py            importing Gst, element look-ups, the plugin's environment
synthetic.py           a tiny synthetic model in the export contract, for tests and benchmarks
bench.py               FPS of `mmad stream` and where the time goes
"""
