"""Task `binary`: tooth vs background (any label value > 0 is tooth).

One sigmoid channel, loss dice_weight * (1 - batch soft Dice) + bce_weight * BCE, a pixel is tooth
when its probability exceeds the threshold, saved masks are 0/255 PNGs (visible in any viewer).
A left-right flip changes nothing about "tooth", so the flip permutations are the identity.
"""
from __future__ import annotations

import numpy as np
import torch

from rbmnet.evaluation.reports import write_segmentation_summary
from rbmnet.evaluation.segmentation_metrics import METRICS, case_metrics
from rbmnet.tasks.base import SegmentationTask, SumsReducer, lookup_table
from rbmnet.tasks.losses import dice_bce_loss

MASK_FOREGROUND = 255


class BinaryTask(SegmentationTask):
    name = "binary"
    metric_names = METRICS

    def __init__(self, threshold: float = 0.5, dice_weight: float = 0.7, bce_weight: float = 0.3):
        self.threshold, self.dice_weight, self.bce_weight = threshold, dice_weight, bce_weight
        self.label_lookup = lookup_table({value: int(value > 0) for value in range(256)})
        self.flip_lookup = np.array([0, 1], dtype=np.uint8)

    @property
    def num_classes(self) -> int:
        return 2

    @property
    def output_channels(self) -> int:
        return 1

    @property
    def channel_flip_order(self) -> list[int]:
        return [0]

    @property
    def model_id_tag(self) -> str:
        return ""

    def loss(self, logits: torch.Tensor, target: torch.Tensor, sums_reducer: SumsReducer = None) -> torch.Tensor:
        return dice_bce_loss(logits, target, self.dice_weight, self.bce_weight, sums_reducer=sums_reducer)

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float())

    def to_index(self, probabilities) -> np.ndarray:
        probabilities = probabilities.cpu().numpy() if isinstance(probabilities, torch.Tensor) else probabilities
        return (probabilities[..., 0, :, :] > self.threshold).astype(np.uint8)

    def index_to_labels(self, index: np.ndarray) -> np.ndarray:
        return np.where(index > 0, MASK_FOREGROUND, 0).astype(np.uint8)

    def case_metrics(self, prediction: np.ndarray, reference: np.ndarray) -> dict:
        return case_metrics(self.binary_mask(prediction), self.binary_mask(reference))

    def write_summary(self, folder, per_case: list[dict], extra: dict) -> dict:
        return write_segmentation_summary(folder, per_case, extra)
