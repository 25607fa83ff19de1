"""The quickstart's clips: the inspection video of the test images (with its ground truth) and the clip of
known-good parts that `mmad calibrate` sets the threshold from, both written by one MJPEG writer.

    python -m mmad.samples.quickstart video CATEGORY INSPECTION.avi [--hold N] [--known-good GOOD.avi]

The inspection video is made of the generated test images rather than mmad.samples.make_video's scene:
the model has only seen this dataset's kind of part, so only its test images make the stream's verdicts
meaningful. The known-good clip shows CATEGORY/calib/good (make_dataset --n-calib): good parts the model
was not trained on and the inspection video does not show, so the threshold is not judged on the frames
it was set from. Both clips go through the same encoder, so their frames carry the same compression the
camera-side decode sees: the threshold is set on what the stream really gets.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2

VIDEO_FPS = 5
KNOWN_GOOD_FOLDER = ("calib", "good")  # under the category folder, as make_dataset --n-calib writes it


def inspection_images(category_root: Path) -> list[tuple[Path, bool]]:
    """(path, defective) of the category's test images: good ones first, then each defect type, sorted."""
    test = category_root / "test"
    if not test.is_dir():
        raise ValueError(f"{test}: no test folder (expected the MVTec layout of mmad.samples.make_dataset)")
    folders = sorted(test.iterdir(), key=lambda p: (p.name != "good", p.name))
    return [
        (img, folder.name != "good") for folder in folders if folder.is_dir() for img in sorted(folder.glob("*.png"))
    ]


def known_good_images(category_root: Path) -> list[Path]:
    """The category's calibration images (calib/good/*.png), sorted; ValueError when there are none."""
    folder = category_root.joinpath(*KNOWN_GOOD_FOLDER)
    images = sorted(folder.glob("*.png"))
    if not images:
        raise ValueError(
            f"{folder}: no .png images; generate them with python -m mmad.samples.make_dataset --n-calib N"
        )
    return images


def write_clip(items: Sequence[tuple[Path, bool]], path: Path, hold: int = 1, fps: int = VIDEO_FPS) -> dict:
    """Images (path, defective) as an MJPEG .avi, each for `hold` frames; writes and returns the ground truth
    {"video", "fps", "hold", "n_frames", "defect_frames", "images"} (also saved as <path>.json)."""
    if not items:
        raise ValueError(f"{path}: no images to write")
    first = cv2.imread(str(items[0][0]), cv2.IMREAD_COLOR)
    height, width = first.shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write an MJPEG .avi here")
    defect_frames: list[int] = []
    frame = 0
    for image_path, defective in items:
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)  # BGR, as VideoWriter expects
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        for _ in range(hold):
            writer.write(image)
            if defective:
                defect_frames.append(frame)
            frame += 1
    writer.release()
    truth = {
        "video": path.name,
        "fps": fps,
        "hold": hold,
        "n_frames": frame,
        "defect_frames": defect_frames,
        "images": [str(p) for p, _ in items],
    }
    path.with_suffix(".json").write_text(json.dumps(truth, indent=2))
    return truth


def write_test_video(category_root: Path, path: Path, hold: int = 1, fps: int = VIDEO_FPS) -> dict:
    """The category's test images as the inspection video (see write_clip); ValueError when there are none."""
    items = inspection_images(category_root)
    if not items:
        raise ValueError(f"{category_root}/test: no .png images")
    return write_clip(items, path, hold, fps)


def write_known_good_clip(category_root: Path, path: Path, fps: int = VIDEO_FPS) -> dict:
    """The calibration images as a clip, one frame each (a repeated frame tells the calibration nothing new)."""
    return write_clip([(p, False) for p in known_good_images(category_root)], path, hold=1, fps=fps)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mmad.samples.quickstart video",
        description="Write the test images of a category as an inspection video (+ ground truth JSON) and, "
        "with --known-good, its calibration images as a clip of known-good parts.",
    )
    parser.add_argument("category", type=Path, help="a category folder in MVTec layout (test/good, test/<defect>)")
    parser.add_argument("video", type=Path, help="the inspection video to write (.avi, MJPEG)")
    parser.add_argument("--hold", type=int, default=1, help="video frames per test image (default 1)")
    parser.add_argument(
        "--known-good",
        type=Path,
        metavar="CLIP",
        help="also write CATEGORY/calib/good as this clip (.avi, MJPEG, one frame per image), for mmad calibrate",
    )
    args = parser.parse_args(argv)
    try:
        truth = write_test_video(args.category, args.video, args.hold)
        print(f"{args.video}: {truth['n_frames']} frames, defects in {len(truth['defect_frames'])}")
        if args.known_good:
            good = write_known_good_clip(args.category, args.known_good)
            print(f"{args.known_good}: {good['n_frames']} frames of known-good parts")
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
