"""MMAD training: the model, its selective scan, datasets, multi-class training and evaluation."""
