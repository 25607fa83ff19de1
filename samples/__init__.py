"""Samples: what a newcomer runs first, on generated data (no download).

Modules:
    make_dataset        a synthetic defect dataset in MVTec AD layout (+ a calib/good split for mmad calibrate)
    make_video          a synthetic inspection video with defects in known frames, and its ground truth
    quickstart          the whole job end to end in one command (samples/quickstart.sh): its steps and CLI
    quickstart_video    the quickstart's clips: the inspection video of the test images, the known-good clip
    quickstart_results  what a quickstart run produced: step results, false alarms and misses, quickstart.md

Also here: install.sh, quickstart.sh, configs/ (example camera configurations).
"""
