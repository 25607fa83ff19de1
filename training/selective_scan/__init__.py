"""The selective scan (Mamba S6) of shared/docs/SELECTIVE_SCAN_OP.md: one home for the op."""
from .reference import selective_scan_ref

__all__ = ["selective_scan_ref"]
