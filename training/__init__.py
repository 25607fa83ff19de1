"""MMAD training (mmad.training): the models on a frozen encoder, datasets, multi-class training and evaluation.

    cli.py              `mmad train` and `mmad eval`: options from typed configs (torch-free at import)
    config.py           ModelConfig, TrainConfig, RunConfig and the presets (paper, fast, tiny)
    models/             the anomaly models: shared layers, the scan block, MMAD, MambaAD, the anomaly head
    encoders.py         the encoder registry and build_encoder (frozen, pretrained)
    backbones.py        the encoder architectures: ResNet-34, Wide-ResNet-50-2, EfficientNet-Lite0 and -Lite2
    encoder_weights.py  finding, verifying, reading and matching pretrained encoder weights
    images.py           decoding images and masks; ImageTransform (the contract's resize, normalisation)
    layouts.py          dataset layouts: MVTec AD, VisA, plain folders of images
    data.py             the torch Datasets and the normal hold-out for the deployment threshold
    train.py            training: set-up, epochs, finish (single process or torchrun DDP)
    resume.py           resuming a run: optimizer, schedule and RNG states
    checkpoint.py       checkpoints: safetensors weights + JSON (config, thresholds, history)
    thresholds.py       the deployment thresholds: per-category rule from held-out normals, their reader
    evaluate.py         test-set inference, metrics per category, reports, the F1 threshold
    baseline.py         the same-encoder nearest-neighbour baseline (`mmad eval --baseline knn`)
    metrics.py          the seven metrics and mAD per category (ADer's protocol)
    metrics_pixel.py    the exact pixel curve: P-AUROC, P-AP, P-F1max
    metrics_aupro.py    AUPRO, sklearn and ADEval variants
    report.py           metrics.json / .md / .csv, overlay grids, score histograms, training curves
    inference.py        a checkpoint behind the runtime's backend interface (PyTorch eager)

The model, its training recipe and the metrics protocol are specified in training/README.md; the
selective scan op in plugins/selective_scan/README.md. Cross-stage names and rules come from
mmad.runtime.contract.
"""
