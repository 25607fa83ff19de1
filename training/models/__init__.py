"""The anomaly models: MMAD (Dilated Mamba Fuser + Hybrid Mamba Decoder) and MambaAD, on a frozen encoder.

    scan_orders.py   Hilbert, Z-order and zigzag scan orders and their 8 directions (index tables)
    model.py         the blocks, both model families and the anomaly head (being split along its seams)

The model's architecture, scan orders and training recipe are described in training/README.md.
"""

from mmad.training.models.model import (
    SS2D,
    AnomalyModel,
    AnomalyOutput,
    build_model,
    count_parameters,
    dead_router_weights,
)

__all__ = ["SS2D", "AnomalyModel", "AnomalyOutput", "build_model", "count_parameters", "dead_router_weights"]
