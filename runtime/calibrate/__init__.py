"""`mmad calibrate`: the image and pixel thresholds measured on known-good frames of the real source, written
beside the model, where every backend, `mmad stream` and `mmadinfer` read them (load_backend).

    result = run_calibrate(CalibrateConfig(model="model.onnx", source="good_parts.mp4"))
    result.path          # model.onnx.calibration.json (contract.Calibration)

    config.py     CalibrateConfig: what calibrate takes; its option fields are the command's flags; CalibrationRefused
    frames.py     known-good frames from a video, camera or RTSP stream (the stream's decode) or a folder of images
    run.py        score the frames as the stream does, fit the thresholds (contract rules), write the file
    plot.py       calibration.png: the score histogram, the threshold and the expected false-alarm rate
    command.py    the `calibrate` subcommand: its parser, made from CalibrateConfig
"""

from mmad.runtime.calibrate.config import CalibrateConfig, CalibrationRefused
from mmad.runtime.calibrate.run import CalibrationResult, run_calibrate

__all__ = ["CalibrateConfig", "CalibrationRefused", "CalibrationResult", "run_calibrate"]
