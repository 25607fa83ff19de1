"""The `mmad bench` report: report.json (everything, raw samples included), report.md (tables a person
reads) and two plots, latency_distribution.png and stage_breakdown.png.

The plots need matplotlib (not a runtime dependency: `pip install matplotlib`); without it the
report says so and the rest is written as usual.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

from mmad.runtime.bench.environment import environment_lines
from mmad.runtime.bench.profile import profile_tables

STAGE_LABELS = {"pre": "pre-processing", "infer": "inference", "post": "post-processing"}
STAGE_COLOURS = {"pre": "#4c72b0", "infer": "#dd8452", "post": "#55a868"}
PLOTS = ("latency_distribution.png", "stage_breakdown.png")


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _sci(value: float) -> str:
    return f"{value:.1e}"


def _batches(report: dict) -> list[str]:
    return [str(b) for b in report["settings"]["batches"]]


def _reference_entry(report: dict) -> dict | None:
    return next((b for b in report["backends"] if b["is_reference"]), None)


def speed_ratio(entry: dict, reference: dict, batch: str, stage: str = "total") -> float | None:
    """How many times faster than the reference (p50 of `stage`); > 1 is faster."""
    try:
        own = entry["latency"][batch]["stages"][stage]["p50"]
        ref = reference["latency"][batch]["stages"][stage]["p50"]
    except KeyError:
        return None
    return ref / own if own > 0 else None


def summary_lines(report: dict) -> list[str]:
    """One sentence per backend and batch: its speed against the reference's, and its deviation."""
    reference = _reference_entry(report)
    if reference is None:
        return []
    lines = []
    for batch in _batches(report):
        for entry in report["backends"]:
            if entry is reference:
                continue
            total, infer = speed_ratio(entry, reference, batch), speed_ratio(entry, reference, batch, "infer")
            if total is None:
                continue
            p50 = entry["latency"][batch]["stages"]["total"]["p50"]
            ref_p50 = reference["latency"][batch]["stages"]["total"]["p50"]
            slower = f" ({1 / total:.1f}× slower)" if total < 1 else ""
            lines.append(
                f"- batch {batch}: **{entry['name']}** is **{total:.2f}×** as fast as {reference['name']}{slower} "
                f"end to end (p50 {_ms(p50)} ms vs {_ms(ref_p50)} ms; inference alone {infer:.2f}×); "
                f"deviation: {entry['deviation']['status']}"
            )
    return lines


def caveats(report: dict) -> list[str]:
    """Conditions that make the figures less trustworthy, one sentence each."""
    env = report["environment"]
    cpu = env.get("cpu") or {}
    notes = []
    load, cpus = cpu.get("load_average_1min"), cpu.get("usable_cpus") or 1
    if load is not None and load > 0.5 * cpus:
        notes.append(
            f"- The machine was busy when the bench started (load average {load} on {cpus} CPUs): other work "
            "shared the CPUs, so latencies are higher and more spread out than on an idle machine."
        )
    jetson = env.get("jetson")
    if jetson is not None:
        if not jetson.get("power_mode"):
            notes.append("- The Jetson power mode is unknown (`nvpmodel -q` failed or is absent).")
        if not jetson.get("locked"):
            notes.append(
                "- Clocks were not locked: DVFS moves them under load. Run `sudo jetson_clocks` for steady figures."
            )
    return notes


def latency_table(report: dict, batch: str) -> list[str]:
    reference = _reference_entry(report)
    rows = [
        "| backend | mean | p50 | p90 | p99 | min | max | images/s | × reference (p50) | vs reference |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for entry in report["backends"]:
        lat = entry["latency"].get(batch)
        if lat is None:
            continue
        t = lat["stages"]["total"]
        ratio = speed_ratio(entry, reference, batch) if reference else None
        status = "reference" if entry["is_reference"] else entry["deviation"]["status"]
        times = " | ".join(_ms(t[k]) for k in ("mean", "p50", "p90", "p99", "min", "max"))
        shown_ratio = "-" if ratio is None else f"{ratio:.2f}"
        rows.append(f"| {entry['name']} | {times} | {lat['throughput_images_per_s']:.2f} | {shown_ratio} | {status} |")
    return rows


def stage_table(report: dict, batch: str) -> list[str]:
    rows = [
        "| backend | pre-processing | inference | post-processing | inference share | inference p50 | inference p99 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for entry in report["backends"]:
        lat = entry["latency"].get(batch)
        if lat is None:
            continue
        s = lat["stages"]
        share = s["infer"]["mean"] / s["total"]["mean"] if s["total"]["mean"] > 0 else 0.0
        rows.append(
            f"| {entry['name']} | {_ms(s['pre']['mean'])} | {_ms(s['infer']['mean'])} | {_ms(s['post']['mean'])} "
            f"| {share:.0%} | {_ms(s['infer']['p50'])} | {_ms(s['infer']['p99'])} |"
        )
    return rows


def deviation_table(report: dict) -> list[str]:
    rows = [
        "| backend | precision | max abs Δ map | max rel Δ map | max abs Δ score | max rel Δ score "
        "| verdicts agree | tolerance | status |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for entry in report["backends"]:
        d = entry["deviation"]
        status = "reference" if entry["is_reference"] else d["status"]
        tolerance = "-" if entry["is_reference"] or d["tolerance"] is None else f"{d['tolerance']:g}"
        rows.append(
            f"| {entry['name']} | {entry['precision']} | {_sci(d['map_max_abs'])} | {_sci(d['map_max_rel'])} "
            f"| {_sci(d['score_max_abs'])} | {_sci(d['score_max_rel'])} | {d['verdict_agreement']:.0%} "
            f"| {tolerance} | {status} |"
        )
    return rows


def _header(report: dict) -> list[str]:
    """The title, who wrote the report and how each iteration is timed."""
    settings = report["settings"]
    reference = _reference_entry(report)
    return [
        f"# Latency report: {', '.join(Path(m).name for m in settings['models'])}",
        "",
        f"Written by `{report['command'] or 'mmad bench'}` on {report['environment'].get('hostname')}, "
        f"{report['created']}.",
        f"Reference: **{report['reference']}** ({reference['describe'] if reference else '?'}).",
        (
            "Each timed iteration runs a batch through pre-processing (resize to the model input), inference and "
            "post-processing (map onto the frame, threshold, regions), as `mmad stream` does; "
            f"{settings['warmup']} warm-up iterations per batch size are not counted, {settings['iterations']} are. "
            f"CPU threads for onnxruntime, OpenVINO and PyTorch: {settings['cpu_threads']}."
        ),
        "",
    ]


def _deviation_section(report: dict) -> list[str]:
    threshold = report["threshold"]
    return [
        f"## Deviation from the reference ({report['reference']}) on {report['settings']['images']['count']} images",
        "",
        (
            "Every backend is fed the same pre-processed images. Relative differences are max|Δ| / max|reference| "
            "(the contract's measure); FP32 backends must stay within their tolerance (TensorRT builds its FP32 "
            "engines with TF32, hence a looser one), FP16 / INT8 ones are reported and flagged when a verdict "
            f"changes. Verdicts: score > {threshold['value']:.6g} ({threshold['source']})."
        ),
        "",
        *deviation_table(report),
        "",
    ]


def _settings_section(report: dict) -> list[str]:
    settings = report["settings"]
    images = settings["images"]
    return [
        "## Settings",
        "",
        f"- models: {', '.join(settings['models'])}",
        f"- images: {images['source']} ({images['count']} images, frame sizes {', '.join(images['frame_sizes'])})",
        (
            f"- batch sizes {', '.join(_batches(report))}, {settings['iterations']} timed + {settings['warmup']} "
            f"warm-up iterations, PyTorch on {settings['torch_device']}"
        ),
        "",
    ]


def markdown(report: dict, plots_written: list[str], plot_note: str | None) -> str:
    """report.md's text."""
    out = _header(report)
    out += ["## Summary", "", *(summary_lines(report) or ["- one backend only: nothing to compare with"])]
    out += [*caveats(report), ""]
    for batch in _batches(report):
        out += [f"## Latency, batch {batch} (ms per batch, end to end)", "", *latency_table(report, batch), ""]
        out += [f"## Stages, batch {batch} (mean ms per batch)", "", *stage_table(report, batch), ""]
    out += _deviation_section(report)
    out += profile_tables(report)
    if report["skipped"]:
        out += ["## Not measured", ""]
        out += [f"- **{s['name']}**: {s['reason']}" for s in report["skipped"]]
        out.append("")
    out += ["## Environment", "", "| | |", "| --- | --- |"]
    out += [f"| {label} | {value} |" for label, value in environment_lines(report["environment"])]
    out += ["", *_settings_section(report), "## Plots", ""]
    if plot_note:
        out.append(plot_note)
    out += [f"![{name[:-4].replace('_', ' ')}]({name})" for name in plots_written]
    out.append("")
    return "\n".join(out)


def _horizontal(ax) -> dict[str, object]:
    """boxplot's keyword for horizontal boxes: `orientation` from matplotlib 3.10 on, `vert` before."""
    if "orientation" in inspect.signature(ax.boxplot).parameters:
        return {"orientation": "horizontal"}
    return {"vert": False}


def plot_latency_distribution(report: dict, path: Path, plt) -> None:
    """Box plots of end-to-end latency per backend, one panel per batch size."""
    batches = _batches(report)
    names = [b["name"] for b in report["backends"]]
    fig, axes = plt.subplots(len(batches), 1, figsize=(9, 1.2 + 0.55 * len(names) * len(batches)), squeeze=False)
    for ax, batch in zip(axes[:, 0], batches):
        data = [b["latency"][batch]["samples_ms"]["total"] for b in report["backends"] if batch in b["latency"]]
        labels = [b["name"] for b in report["backends"] if batch in b["latency"]]
        ax.boxplot(data, whis=(1, 99), widths=0.6, showmeans=True, **_horizontal(ax))
        ax.set_yticks(range(1, len(labels) + 1), labels)
        ax.invert_yaxis()  # the reference on top, as in the tables
        low = min(min(d) for d in data)
        high = max(max(d) for d in data)
        if low > 0 and high / low > 20:
            ax.set_xscale("log")
        ax.set_xlabel(f"end-to-end latency per batch of {batch} (ms); whiskers p1-p99, triangle = mean")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Latency distribution per backend")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_stage_breakdown(report: dict, path: Path, plt) -> None:
    """Stacked bars of mean pre / inference / post time per backend, one panel per batch size."""
    batches = _batches(report)
    names = [b["name"] for b in report["backends"]]
    fig, axes = plt.subplots(len(batches), 1, figsize=(9, 1.2 + 0.55 * len(names) * len(batches)), squeeze=False)
    for ax, batch in zip(axes[:, 0], batches):
        entries = [b for b in report["backends"] if batch in b["latency"]]
        y = list(range(len(entries)))
        left = [0.0] * len(entries)
        for stage in ("pre", "infer", "post"):
            widths = [e["latency"][batch]["stages"][stage]["mean"] for e in entries]
            ax.barh(y, widths, left=left, color=STAGE_COLOURS[stage], label=STAGE_LABELS[stage])
            left = [a + w for a, w in zip(left, widths)]
        for yi, total in zip(y, left):
            ax.text(total, yi, f" {_ms(total)} ms", va="center", fontsize=8)
        ax.set_yticks(y, [e["name"] for e in entries])
        ax.invert_yaxis()
        ax.set_xlim(0, max(left) * 1.18 if left and max(left) > 0 else 1)
        ax.set_xlabel(f"mean time per batch of {batch} (ms)")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Where the time goes: mean pre-processing, inference and post-processing")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(report: dict, out_dir: Path) -> tuple[list[str], str | None]:
    """The PNGs written (names) and a note when they could not be."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed (a Jetson over SSH, CI)
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "No plots: matplotlib is not installed (`pip install matplotlib`, then run mmad bench again)."
    plot_latency_distribution(report, out_dir / PLOTS[0], plt)
    plot_stage_breakdown(report, out_dir / PLOTS[1], plt)
    return list(PLOTS), None


def write_report(report: dict, out_dir: Path, plots: bool = True) -> list[Path]:
    """Write report.json, the plots and report.md into out_dir; return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names, note = write_plots(report, out_dir) if plots else ([], "Plots switched off (--no-plots).")
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    (out_dir / "report.md").write_text(markdown(report, names, note))
    return [out_dir / "report.json", out_dir / "report.md", *(out_dir / n for n in names)]
