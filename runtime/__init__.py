"""MMAD runtime: what an inspection camera runs (numpy, OpenCV, onnxruntime or TensorRT, GStreamer; never torch).

The bottom layer, shared with training and export:
    contract.py      every cross-stage name, tolerance, format and rule (op names, I/O, metadata, sidecar,
                     thresholds, resize_to_input); imports nothing of the project but errors.py
    errors.py        ConfigError: a bad model, source or option, in one sentence (exit code 2); OutputError: an
                     output lost during a run (os_error_text says "disk full" when it is)
    options.py       command-line options defined once, on the typed config field they fill

Running a model:
    backends/        Backend interface and load_backend(): base.py, onnxruntime.py, tensorrt.py
    model_info.py    the model's input spec and threshold, read from its "mmad.*" metadata
    processing.py    ROI crop, resize to the input, map -> score, mask, regions, heat-map overlay
    inspector.py     FrameInspector: one frame in, one verdict out
    events.py        JSON-lines events, flushed per line

Streaming:
    stream/          `mmad stream`: config, runner (the loop), pipelines (GStreamer in / out), stats, command
    sources.py       --source URIs -> GStreamer pipeline descriptions (desktop and Jetson)
    gst_util.py      importing Gst, element look-ups, the plugin's environment
    gst_element.py   the `mmadinfer` GStreamer element (gst_plugin/python/mmadinfer.py loads it)

Measuring and testing:
    calibrate/       `mmad calibrate`: thresholds from known-good frames of the real source, written beside the model
    bench/           `mmad bench`: latency per backend and stage, deviation, report; the stream's FPS
    synthetic.py     a tiny synthetic model in the contract's I/O, for tests and benchmarks
    synthetic_video.py  generated inspection frames and videos with defects in known frames (bench, samples)

    cli.py           the `mmad` command: each package's subcommands (train, eval, export, calibrate, stream, bench)
"""
