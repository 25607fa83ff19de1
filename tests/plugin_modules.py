"""Loads the Python helpers of plugins/selective_scan/ (a folder of scripts, not a package) for tests."""

import importlib.util
import sys
from pathlib import Path

SCAN_DIR = Path(__file__).resolve().parents[1] / "plugins" / "selective_scan"


def load(name: str):
    """Import plugins/selective_scan/<name>.py once, under its own name."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCAN_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
