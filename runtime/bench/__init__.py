"""Benchmarks of a deployed model: `mmad bench` (latency per backend and stage, deviation from the
reference, environment) and the stream's own frames per second.

    report = run_bench(BenchConfig(models=["runs/bottle"], report_dir=Path("bench")))   # run.py

Backends (names as `--backends` takes them; a family name such as "tensorrt" selects all of its kind):

    pytorch                    the checkpoint in PyTorch eager mode (mmad.training.inference, imported
                               by checkpoint.py only for this backend: the runtime never imports torch)
    onnxruntime-portable       the standard-ops graph on onnxruntime's CPU provider
    onnxruntime-portable-cuda  the same on the CUDA provider, when onnxruntime has it
    onnxruntime-custom-op      the SelectiveScan custom-op graph on the CPU (onnxruntime-extensions)
    tensorrt-fp32|fp16|int8    TensorRT engines with the SelectiveScan plugin
    (ONNX files in FP16 / INT8 get a -fp16 / -int8 suffix)

`models` is a checkpoint folder, ONNX / engine files, or both. With a checkpoint, PyTorch eager is
the reference and the ONNX graphs and engines not given as files are exported into
<report>/models/ through mmad.export. With files only, the first portable FP32 graph is the
reference (else the first file). The deviation check runs every backend on the same
pre-processed images and compares maps and scores with the reference's.

    command.py          the `bench` subcommand: its options, made from BenchConfig
    config.py           BenchConfig (the options) and the parsing of their values
    candidates.py       which backends run here, the reference first, and why the others cannot
    checkpoint.py       the one adapter above the runtime: PyTorch eager and the export of a checkpoint
    frames.py           the images or generated frames every backend sees
    deviation.py        each backend's distance from the reference, against the contract's tolerances
    run.py              the timing loop per stage and batch size, and run_bench()
    profile.py          --profile: each backend's inference time by op type, from its own profiler
    environment.py      the machine the numbers were measured on
    report.py           report.md and the plots
    stream_fps.py       frames per second of `mmad stream` (python -m mmad.runtime.bench.stream_fps)
"""
