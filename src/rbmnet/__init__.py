"""rbmnet: self-configuring teeth segmentation with Random Block Masking pretraining."""

__version__ = "0.1.0"
