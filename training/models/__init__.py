"""The anomaly models: MMAD (Dilated Mamba Fuser + Hybrid Mamba Decoder) and MambaAD, on a frozen encoder.

    layers.py        shared layers: DropPath, LayerNorm2d, conv-BN-act, GaussianBlur, PatchExpand, inits
    scan_orders.py   Hilbert, Z-order and zigzag scan orders and their 8 directions (index tables)
    scan_block.py    the state-space scan block: direction gather/scatter, SS2D, VSS block
    mambaad.py       MambaAD's LSS module and MFF_OCE fuser (FPN fusion, one-class embedding)
    mmad.py          MMAD's HybridBlock, Dilated Mamba Fuser (with CAB) and Hybrid Mamba Decoder
    head.py          AnomalyModel: encoder -> fuser -> decoder -> anomaly map and score; parameter counts

The model's architecture, scan orders and training recipe are described in training/README.md.
Other packages import only the names below.
"""

from mmad.training.models.head import AnomalyModel, AnomalyOutput, build_model, count_parameters, dead_router_weights
from mmad.training.models.scan_block import SS2D

__all__ = ["SS2D", "AnomalyModel", "AnomalyOutput", "build_model", "count_parameters", "dead_router_weights"]
