"""What a benchmark ran on: CPU, GPU, library versions and, on a Jetson, power mode and clocks.

Latency figures mean little without this: the same Orin is twice as fast in MAXN with locked
clocks as in a 15 W mode with DVFS. Everything is read from /proc, /sys, package metadata and
NVIDIA's command-line tools when present; nothing here imports torch or TensorRT (package versions
come from installed-package metadata).

    env = capture_environment()   # a JSON-able dict
"""

from __future__ import annotations

import glob
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

# Distributions whose versions a latency report names (the import name differs for some).
LIBRARIES = (
    "mmad-edge",
    "numpy",
    "opencv-python-headless",
    "opencv-python",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-extensions",
    "onnx",
    "torch",
    "openvino",
    "tensorrt",
    "polygraphy",
    "pycuda",
    "matplotlib",
)


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return None


def _run(command: list[str], timeout: float = 10.0) -> str | None:
    """stdout of a command, or None when it is absent, fails or hangs."""
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def library_versions() -> dict[str, str]:
    """Installed versions of LIBRARIES (absent ones left out), from package metadata: no imports."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        import cv2  # the runtime's own dependency: cheap, and its build may not come from pip

        versions.setdefault("opencv", cv2.__version__)
    except ImportError:
        pass
    # JetPack installs TensorRT's Python bindings as a Debian package, outside pip's metadata.
    if "tensorrt" not in versions:
        dpkg = _run(["dpkg-query", "-W", "-f=${Version}", "python3-libnvinfer"])
        if dpkg:
            versions["tensorrt"] = dpkg
    return versions


def cpu_facts() -> dict[str, object]:
    """Model name, logical CPUs, CPUs this process may use, governor and frequency limits of cpu0."""
    model = None
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
            model = value.strip()
            break
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    facts: dict[str, object] = {
        "model": model or platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": affinity,
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    freq = "/sys/devices/system/cpu/cpu0/cpufreq"
    for key in ("scaling_governor", "scaling_min_freq", "scaling_max_freq", "cpuinfo_max_freq"):
        value = _read(f"{freq}/{key}")
        if value is not None:
            facts[key] = value
    return facts


def memory_gib() -> float | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 2**20, 1)
    return None


def nvidia_smi_gpus() -> list[dict[str, str]]:
    """GPUs seen by nvidia-smi: name, driver, memory, compute capability (empty without nvidia-smi)."""
    fields = ("name", "driver_version", "memory.total", "compute_cap")
    out = _run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"])
    if not out:
        return []
    return [dict(zip(fields, (v.strip() for v in line.split(",")))) for line in out.splitlines() if line.strip()]


def is_jetson() -> bool:
    return Path("/etc/nv_tegra_release").exists() or "tegra" in (_read("/proc/device-tree/compatible") or "")


def _devfreq_gpu() -> Path | None:
    """The Jetson GPU's devfreq node (Orin: 17000000.ga10b / .gpu; Xavier: 17000000.gv11b)."""
    for pattern in ("/sys/class/devfreq/*.ga10b", "/sys/class/devfreq/*.gv11b", "/sys/class/devfreq/*.gpu"):
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[0])
    return None


def clocks_locked(cpufreq_dirs: list[Path], gpu_devfreq: Path | None) -> dict[str, object]:
    """Whether CPU and GPU clocks are pinned at one frequency, as `sudo jetson_clocks` leaves them.

    Locked means min frequency == max frequency (DVFS cannot move them), read from each CPU's
    cpufreq folder and the GPU's devfreq folder. `jetson_clocks --show` needs root, so it is not used.
    """
    cpu_pinned = [(_read(c / "scaling_min_freq"), _read(c / "scaling_max_freq")) for c in cpufreq_dirs]
    cpu_locked = bool(cpu_pinned) and all(lo is not None and lo == hi for lo, hi in cpu_pinned)
    result: dict[str, object] = {"cpu_locked": cpu_locked}
    if gpu_devfreq is not None:
        lo, hi, cur = (_read(gpu_devfreq / k) for k in ("min_freq", "max_freq", "cur_freq"))
        result.update(gpu_locked=lo is not None and lo == hi, gpu_min_freq=lo, gpu_max_freq=hi, gpu_cur_freq=cur)
    result["locked"] = cpu_locked and bool(result.get("gpu_locked", True))
    return result


def parse_nvpmodel(text: str) -> dict[str, str | None]:
    """`nvpmodel -q` output ("NV Power Mode: MAXN" then the mode's number, maybe after warnings) -> name, number."""
    name = number = None
    for line in (line.strip() for line in text.splitlines()):
        if line.startswith("NV Power Mode"):
            name = line.split(":", 1)[1].strip()
        elif line.isdigit():
            number = line
    return {"power_mode": name, "power_mode_id": number}


def jetson_facts() -> dict[str, object]:
    """Board, L4T release, power mode (`nvpmodel -q`) and clock locking."""
    release = _read("/etc/nv_tegra_release")
    facts: dict[str, object] = {
        "board": _read("/proc/device-tree/model"),
        "l4t_release": release.splitlines()[0] if release else None,
    }
    power = _run(["nvpmodel", "-q"])
    # None when nvpmodel is absent (a container without it): the report says so.
    facts.update(parse_nvpmodel(power) if power else {"power_mode": None, "power_mode_id": None})
    cpus = [Path(p) for p in sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq"))]
    facts.update(clocks_locked(cpus, _devfreq_gpu()))
    return facts


def capture_environment() -> dict[str, object]:
    """Everything above as one JSON-able dict."""
    env: dict[str, object] = {
        "hostname": platform.node(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu": cpu_facts(),
        "memory_gib": memory_gib(),
        "gpus": nvidia_smi_gpus(),
        "libraries": library_versions(),
        "threads_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
    }
    try:
        import onnxruntime

        env["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        env["onnxruntime_providers"] = []
    if is_jetson():
        env["jetson"] = jetson_facts()
    return env


def environment_lines(env: dict[str, object]) -> list[tuple[str, str]]:
    """(label, value) rows for the report's environment table."""
    cpu = env.get("cpu", {}) or {}
    rows = [
        ("OS", str(env.get("os"))),
        ("CPU", f"{cpu.get('model')} ({cpu.get('usable_cpus')} of {cpu.get('logical_cpus')} CPUs usable)"),
        ("Load average (1 min, at start)", str(cpu.get("load_average_1min"))),
        ("Memory", f"{env.get('memory_gib')} GiB"),
    ]
    if cpu.get("scaling_governor"):
        rows.append(("CPU governor", str(cpu["scaling_governor"])))
    gpus = env.get("gpus") or []
    rows.append(
        (
            "GPU",
            "; ".join(f"{g.get('name')} (driver {g.get('driver_version')}, sm {g.get('compute_cap')})" for g in gpus)
            or "none seen by nvidia-smi",
        )
    )
    jetson = env.get("jetson")
    if jetson:
        rows.append(("Jetson", f"{jetson.get('board')}, {jetson.get('l4t_release')}"))
        rows.append(("Power mode (nvpmodel -q)", str(jetson.get("power_mode") or "unknown: nvpmodel not found")))
        rows.append(
            ("Clocks locked (jetson_clocks)", "yes" if jetson.get("locked") else "no: latencies vary with DVFS")
        )
    rows.append(("Python", str(env.get("python"))))
    libs = env.get("libraries") or {}
    rows.append(("Libraries", ", ".join(f"{k} {v}" for k, v in sorted(libs.items()))))
    if env.get("onnxruntime_providers"):
        rows.append(("onnxruntime providers", ", ".join(env["onnxruntime_providers"])))
    if env.get("threads_env"):
        rows.append(("Thread variables", ", ".join(f"{k}={v}" for k, v in env["threads_env"].items())))
    return rows
