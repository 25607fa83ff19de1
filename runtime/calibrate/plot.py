"""calibration.png: the known-good scores' histogram, the fitted Gumbel density, the threshold and the
expected false-alarm rate, so a user sees at a glance how far the threshold sits above the good frames.

matplotlib is optional on a runtime install (`pip install matplotlib`): without it there is no plot,
and a log line says so. The figure is drawn with the Agg canvas directly (no pyplot), so no global
matplotlib state changes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mmad.runtime.contract import ThresholdFit

log = logging.getLogger("mmad.calibrate")


def write_plot(path: Path, scores: np.ndarray, fit: ThresholdFit, subtitle: str) -> Path | None:
    """Write the plot to `path` and return it; None (with a log line) when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.info("matplotlib is not installed: no %s (pip install matplotlib)", path.name)
        return None
    figure = Figure(figsize=(7.5, 4.2), dpi=110)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    low, high = float(scores.min()), max(float(fit.threshold), float(scores.max()))
    margin = 0.15 * (high - low) or 1e-6
    bins = min(60, max(10, scores.size // 5))
    label = f"{scores.size} known-good frames"
    ax.hist(
        scores, bins=bins, range=(low - margin, high + margin), density=True, color="tab:green", alpha=0.6, label=label
    )
    x = np.linspace(low - margin, high + margin, 400)
    z = (x - fit.location) / fit.scale
    ax.plot(x, np.exp(-z - np.exp(-z)) / fit.scale, color="tab:blue", label="Gumbel fit")
    ax.axvline(fit.threshold, color="tab:red", linestyle="--", label=f"threshold {fit.threshold:.6g}")
    ax.set_xlabel("image score (anomalous when above the threshold)")
    ax.set_ylabel("density")
    ax.set_title(
        f"threshold {fit.threshold:.6g}: expected false-alarm rate {100 * fit.expected_false_alarm_rate:.3g} % "
        f"(target {100 * fit.target_false_alarm_rate:.3g} %)\n{subtitle}",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    return path
