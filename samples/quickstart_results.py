"""What a quickstart run produced: where its files are, one line per finished step read from them, the
stream's verdicts against the inspection video's ground truth (false alarms and misses, with a warning
over 10 %), and the summary written as OUT/quickstart.md and OUT/quickstart.json."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from mmad.runtime.contract import calibration_path, read_calibration
from mmad.training.thresholds import deployment_thresholds, describe

CATEGORY = "object"
WARN_RATE = 0.10  # a false-alarm or miss rate above this gets a warning line in quickstart.md


@dataclass
class Step:
    name: str
    command: list[str]  # as a user types it: "mmad ..." or "python -m ..."
    seconds: float = 0.0
    result: str = ""
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RunFiles:
    """Where a quickstart run puts everything, under its output folder."""

    out: Path

    @property
    def data(self) -> Path:
        return self.out / "data"

    @property
    def category(self) -> Path:
        return self.data / CATEGORY

    @property
    def checkpoint(self) -> Path:
        return self.out / "checkpoint"

    @property
    def model(self) -> Path:
        return self.out / "model.onnx"

    @property
    def video(self) -> Path:
        return self.out / "inspection.avi"

    @property
    def known_good(self) -> Path:
        return self.out / "known_good.avi"

    @property
    def calibration(self) -> Path:
        return calibration_path(self.model)

    @property
    def events(self) -> Path:
        return self.out / "events.jsonl"

    @property
    def stream_stats(self) -> Path:
        return self.out / "stream_stats.json"


def _read_events(events_path: Path) -> list[dict]:
    return [json.loads(line) for line in events_path.read_text().splitlines() if line.strip()]


def detection_summary(events_path: Path, truth: dict) -> dict[str, int]:
    """How the stream's per-frame verdicts (events-mode frame) match the video's ground truth."""
    flagged = {int(event["frame"]): bool(event["anomalous"]) for event in _read_events(events_path)}
    defects = set(truth["defect_frames"])
    normal = set(range(truth["n_frames"])) - defects
    return {
        "frames": truth["n_frames"],
        "frames_inferred": len(flagged),
        "defect_frames": len(defects),
        "defect_frames_flagged": sum(flagged.get(i, False) for i in defects),
        "normal_frames": len(normal),
        "normal_frames_flagged": sum(flagged.get(i, False) for i in normal),
    }


def verdicts(events_path: Path, truth: dict) -> dict:
    """detection_summary plus the rates a user judges the run by: false alarms (good frames flagged / good
    frames) and misses (defect frames not flagged / defect frames; a frame never inferred counts as missed),
    the range of each kind's scores and the thresholds the stream's events carry."""
    summary = detection_summary(events_path, truth)
    events = _read_events(events_path)
    defects = set(truth["defect_frames"])
    misses = summary["defect_frames"] - summary["defect_frames_flagged"]

    def score_range(defective: bool) -> list[float] | None:
        scores = [e["score"] for e in events if (int(e["frame"]) in defects) == defective and "score" in e]
        return [min(scores), max(scores)] if scores else None

    return {
        **summary,
        "false_alarm_rate": summary["normal_frames_flagged"] / max(summary["normal_frames"], 1),
        "misses": misses,
        "miss_rate": misses / max(summary["defect_frames"], 1),
        "normal_scores": score_range(False),
        "defect_scores": score_range(True),
        "stream_thresholds": sorted({e["threshold"] for e in events if e.get("threshold") is not None}),
    }


def calibration_summary(path: Path) -> dict | None:
    """The calibration file's threshold and what it expects, or None when there is none."""
    if not path.is_file():
        return None
    calibration = read_calibration(path)
    fit = calibration.fit
    return {
        "file": path.name,
        "threshold": calibration.image_threshold,
        "pixel_threshold": calibration.pixel_threshold,
        "frames": calibration.frames,
        "source": calibration.source,
        "rule": fit.get("rule"),
        "target_false_alarm_rate": fit.get("target_false_alarm_rate"),
        "expected_false_alarm_rate": fit.get("expected_false_alarm_rate"),
        "max_normal": fit.get("max_normal"),
    }


def _percent(rate: float | None) -> str:
    return "?" if rate is None else f"{100 * rate:.2g} %"


def _range(scores: list[float] | None) -> str:
    return f"{scores[0]:.4g} to {scores[1]:.4g}" if scores else "none"


def calibration_line(cal: dict) -> str:
    return (
        f"threshold {cal['threshold']:.4g} from {cal['frames']} known-good frames scoring up to "
        f"{cal.get('max_normal') or float('nan'):.4g} ({cal['rule']} fit: expected "
        f"false-alarm rate {_percent(cal['expected_false_alarm_rate'])}, target "
        f"{_percent(cal['target_false_alarm_rate'])})"
    )


def warnings(v: dict) -> list[str]:
    """One line per rate over WARN_RATE."""
    found = []
    if v["false_alarm_rate"] > WARN_RATE:
        found.append(
            f"false alarms {_percent(v['false_alarm_rate'])} ({v['normal_frames_flagged']} of {v['normal_frames']} "
            f"good frames flagged) exceed {_percent(WARN_RATE)}: compare the good frames' scores in events.jsonl "
            "with the threshold; calibrate on more known-good frames from this camera (mmad calibrate)"
        )
    if v["miss_rate"] > WARN_RATE:
        found.append(
            f"misses {_percent(v['miss_rate'])} ({v['misses']} of {v['defect_frames']} defect frames not flagged) "
            f"exceed {_percent(WARN_RATE)}: compare the defect frames' scores in events.jsonl with the threshold; "
            "the model may need longer training (--train-minutes, --epochs)"
        )
    return found


def verdict_lines(v: dict, cal: dict | None) -> list[str]:
    """The quickstart.md section on the stream's verdicts."""
    used = ", ".join(f"{t:.4g}" for t in v["stream_thresholds"]) or "none"
    source = v.get("stats", {}).get("threshold_source")
    used += f" ({source})" if source else ""
    where = f"calibrated by mmad calibrate: {calibration_line(cal)}" if cal else "no calibration file"
    lines = [
        "## The stream's verdicts against the video's ground truth",
        "",
        f"The stream used threshold {used}; {where}.",
        "",
        "| | frames | count | rate | their scores |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| false alarms (good frames flagged) | {v['normal_frames']} | {v['normal_frames_flagged']} | "
        f"{_percent(v['false_alarm_rate'])} | good frames: {_range(v.get('normal_scores'))} |",
        f"| misses (defect frames not flagged) | {v['defect_frames']} | {v['misses']} | {_percent(v['miss_rate'])} | "
        f"defect frames: {_range(v.get('defect_scores'))} |",
        "",
    ]
    if v["frames_inferred"] < v["frames"]:
        lines += [
            f"Only {v['frames_inferred']} of {v['frames']} frames were inferred (the rest count as not flagged).",
            "",
        ]
    lines += [f"**Warning:** {w}" for w in warnings(v)]
    return lines


def _train_result(files: RunFiles) -> str:
    info = json.loads((files.checkpoint / "checkpoint.json").read_text())
    progress = info.get("progress", {})
    epochs = info["config"]["train"]["epochs"]
    return f"epoch {progress.get('epoch')}/{epochs}, {describe(deployment_thresholds(info['thresholds']))}"


def _stream_result(files: RunFiles) -> tuple[str, dict]:
    stats = json.loads(files.stream_stats.read_text())
    v = verdicts(files.events, json.loads(files.video.with_suffix(".json").read_text()))
    keys = ("fps", "latency_ms_median", "frames_inferred", "anomalies", "threshold_source")
    extra = {"stats": {k: stats.get(k) for k in keys}, **v}
    text = (
        f"{v['defect_frames_flagged']}/{v['defect_frames']} defect frames flagged, {v['normal_frames_flagged']}/"
        f"{v['normal_frames']} good frames flagged, {stats.get('fps', 0):.2f} fps"
    )
    return text, extra


def _bench_result(files: RunFiles) -> str:
    report = json.loads((files.out / "bench" / "report.json").read_text())
    parts = []
    for entry in report["backends"]:
        p50 = entry["latency"]["1"]["stages"]["total"]["p50"]
        status = "reference" if entry["is_reference"] else entry["deviation"]["status"]
        parts.append(f"{entry['name']} p50 {p50:.0f} ms ({status})")
    return "; ".join(parts)


def step_result(name: str, files: RunFiles) -> tuple[str, dict]:
    """One line on what a finished step produced, read from its output files, and the figures behind it."""
    if name == "train":
        return _train_result(files), {}
    if name == "eval":
        mean = json.loads((files.out / "eval" / "metrics.json").read_text())["mean"]
        return ", ".join(f"{k} {v:.1f}" for k, v in mean.items()), {}
    if name == "export":
        return f"{files.model} ({files.model.stat().st_size / 2**20:.1f} MB)", {}
    if name == "video":
        truth = json.loads(files.video.with_suffix(".json").read_text())
        good = json.loads(files.known_good.with_suffix(".json").read_text())
        return (
            f"{truth['n_frames']} frames, {len(truth['defect_frames'])} showing a defect; "
            f"{good['n_frames']} known-good frames in {files.known_good.name}"
        ), {}
    if name == "calibrate":
        cal = calibration_summary(files.calibration)
        return (calibration_line(cal) if cal else f"no {files.calibration.name} written"), {"calibration": cal}
    if name == "stream":
        text, extra = _stream_result(files)
        return text, {**extra, "calibration": calibration_summary(files.calibration)}
    if name == "bench":
        return _bench_result(files), {}
    return "done", {}


def write_summary(files: RunFiles, done: list[Step], total_s: float) -> Path:
    """OUT/quickstart.md (the table of steps, then the stream's verdicts) and OUT/quickstart.json."""
    lines = [
        "# Quickstart run",
        "",
        (
            f"Total {total_s / 60:.1f} min. Outputs in `{files.out}`: checkpoint/, eval/metrics.md, model.onnx, "
            f"{files.calibration.name} (+ .png), annotated.mp4, events.jsonl, bench/report.md."
        ),
        "",
        "| step | seconds | result | command |",
        "| --- | ---: | --- | --- |",
    ]
    lines += [f"| {s.name} | {s.seconds:.0f} | {s.result} | `{shlex.join(s.command)}` |" for s in done]
    stream = next((s for s in done if s.name == "stream"), None)
    if stream is not None:
        lines += ["", *verdict_lines(stream.extra, stream.extra.get("calibration"))]
    path = files.out / "quickstart.md"
    path.write_text("\n".join(lines) + "\n")
    (files.out / "quickstart.json").write_text(
        json.dumps(
            [{"step": s.name, "seconds": s.seconds, "result": s.result, "command": s.command, **s.extra} for s in done],
            indent=2,
        )
    )
    return path
