"""`mmad bench --profile`: where each backend's inference time goes, by op type.

    entry = profile_backend(backend, inputs, runs=5)   # {"profiler", "runs", "total_ms", "ops": [...]} or
                                                       # {"unavailable": reason}
    lines = profile_tables(report)                     # the report's markdown section

A backend that can profile itself has `op_times(images, runs) -> (profiler name, {op type: ms per run})`,
measured after one untimed run on a separate, instrumented copy of its model so that the timed
iterations stay uninstrumented: onnxruntime's session profiler (kernel times per node), OpenVINO's
per-layer performance counters (PERF_COUNT), PyTorch's profiler (self CPU time per operator). Shares are of
the summed op times, which is the inference time minus what runs between ops (a few percent).

The scan-order permutation (training/models/scan_block.py) is a Gather in the exported graphs and
aten::gather in PyTorch; its share is reported on its own line so that a regression shows.
"""

from __future__ import annotations

import logging

import numpy as np

from mmad.runtime.backends import Backend
from mmad.runtime.contract import SCAN_OP_TYPE

log = logging.getLogger("mmad.bench")

PERMUTATION_OPS = ("Gather", "GatherElements", "aten::gather", "aten::index_select")
TABLE_ROWS = 8  # op types shown per backend in report.md; the rest are summed as "other"


def op_shares(times_ms: dict[str, float]) -> list[dict[str, object]]:
    """[{"op", "ms", "share"}] by decreasing time; share is of the summed times (0..1)."""
    total = sum(times_ms.values())
    ordered = sorted(times_ms.items(), key=lambda item: -item[1])
    return [{"op": op, "ms": ms, "share": ms / total if total > 0 else 0.0} for op, ms in ordered]


def permutation_share(ops: list[dict[str, object]]) -> float:
    """The share of the scan-order permutation ops (PERMUTATION_OPS) among `ops`."""
    return float(sum(o["share"] for o in ops if o["op"] in PERMUTATION_OPS))


def profile_backend(backend: Backend, images: np.ndarray, runs: int) -> dict[str, object]:
    """The report's profile of one backend: op types with ms per run and share, or why there is none."""
    op_times = getattr(backend, "op_times", None)
    if op_times is None:
        return {"unavailable": f"{backend.name} has no op profiler"}
    try:
        profiler, times = op_times(images, runs)
    except (RuntimeError, OSError, ValueError) as err:  # a profiler that cannot run here
        log.warning("%s: profiling failed: %s", backend.name, err)
        return {"unavailable": f"profiling failed: {err}"}
    ops = op_shares(times)
    return {
        "profiler": profiler,
        "runs": runs,
        "batch": int(images.shape[0]),
        "total_ms": float(sum(times.values())),
        "permutation_share": permutation_share(ops),
        "ops": ops,
    }


def _rows(profile: dict[str, object]) -> list[str]:
    ops = profile["ops"]
    shown = ops[:TABLE_ROWS]
    shown += [o for o in ops[TABLE_ROWS:] if o["op"] == SCAN_OP_TYPE or o["op"] in PERMUTATION_OPS]
    rows = [f"| {o['op']} | {o['ms']:.2f} | {100 * o['share']:.1f} % |" for o in shown]
    rest = [o for o in ops if o not in shown]
    if rest:
        rest_ms = sum(o["ms"] for o in rest)
        rows.append(f"| other ({len(rest)} types) | {rest_ms:.2f} | {100 * sum(o['share'] for o in rest):.1f} % |")
    return rows


def profile_tables(report: dict) -> list[str]:
    """report.md's "Where the time goes" section: one table per profiled backend."""
    entries = [b for b in report["backends"] if "profile" in b]
    if not entries:
        return []
    out = [
        "## Where the inference time goes (--profile)",
        "",
        "Op types by time per run, as each backend's own profiler reports them; shares are of the summed op times. "
        "The scan-order permutation is the Gather ops (aten::gather in PyTorch).",
        "",
    ]
    for entry in entries:
        profile = entry["profile"]
        if "unavailable" in profile:
            out += [f"- **{entry['name']}**: no profile ({profile['unavailable']})", ""]
            continue
        out += [
            f"**{entry['name']}** ({profile['profiler']}, batch {profile['batch']}, {profile['runs']} runs): "
            f"{profile['total_ms']:.1f} ms of ops per run; scan-order permutation "
            f"{100 * profile['permutation_share']:.1f} %",
            "",
            "| op type | ms per run | share |",
            "| --- | ---: | ---: |",
            *_rows(profile),
            "",
        ]
    return out
