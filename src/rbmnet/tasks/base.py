"""What every segmentation task provides: the contract training, inference and evaluation rely on.

A task turns raw label maps (the values dataset.json declares) into training targets, says how many
channels the network outputs and how they become probabilities, gives the loss, turns probabilities
into the label map a user gets, and knows what a left-right flip does to its labels.

Label maps are handled as "index maps" inside training: uint8, 0 = background, 1..K = the task's
classes. A left-right flip permutes these indices (`flip_lookup`) and the output channels
(`channel_flip_order`); both are None when left-right flips are not allowed for the task's labels.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from rbmnet.errors import RbmnetError

SumsReducer = Callable[[torch.Tensor], torch.Tensor] | None


class SegmentationTask:
    name: str = ""
    # raw label value (0..255) -> index; values the task does not know map to UNKNOWN
    label_lookup: np.ndarray
    # index -> index after a left-right flip of the image; None: no left-right flips for these labels
    flip_lookup: np.ndarray | None
    note: str = ""  # one line shown when training starts (e.g. why flips are off)
    UNKNOWN = 255

    @property
    def num_classes(self) -> int:
        """Values an index map can hold, background included."""
        raise NotImplementedError

    @property
    def output_channels(self) -> int:
        raise NotImplementedError

    @property
    def channel_flip_order(self) -> list[int] | None:
        """Output channel c of the unflipped view = channel order[c] of the flipped view's output."""
        raise NotImplementedError

    @property
    def model_id_tag(self) -> str:
        """What the model id adds for this task ('' for the original binary task)."""
        raise NotImplementedError

    def encode(self, label_map: np.ndarray, source: str = "label map") -> np.ndarray:
        """Raw label values -> uint8 index map; a value the task does not know is an error naming `source`."""
        index = self.label_lookup[np.asarray(label_map, dtype=np.uint8)]
        if (index == self.UNKNOWN).any():
            values = sorted(int(v) for v in np.unique(np.asarray(label_map)[index == self.UNKNOWN]))
            raise RbmnetError(f"{source}: label value(s) {values[:8]} are not declared in dataset.json labels")
        return index

    def loss(self, logits: torch.Tensor, target: torch.Tensor, sums_reducer: SumsReducer = None) -> torch.Tensor:
        """(B, C, H, W) logits and (B, 1, H, W) index targets (any dtype) -> scalar loss."""
        raise NotImplementedError

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits -> what fold ensembling and mirror TTA average (probabilities, same channel count)."""
        raise NotImplementedError

    def to_index(self, probabilities: torch.Tensor | np.ndarray) -> np.ndarray:
        """(B, C, H, W) or (C, H, W) probabilities -> index map(s) (uint8), without the batch dim when unbatched."""
        raise NotImplementedError

    def index_to_labels(self, index: np.ndarray) -> np.ndarray:
        """Index map -> the label map users get (uint8)."""
        raise NotImplementedError

    def decode(self, probabilities: np.ndarray) -> np.ndarray:
        """(C, H, W) probabilities at the original size -> the saved uint8 prediction."""
        return self.index_to_labels(self.to_index(probabilities))

    def tooth_probability(self, probabilities: np.ndarray) -> np.ndarray:
        """(C, H, W) probabilities -> (H, W) probability that the pixel is some tooth."""
        return probabilities[0]

    @staticmethod
    def binary_mask(label_map: np.ndarray) -> np.ndarray:
        """Tooth vs background of a saved prediction or a raw label map, whatever the task."""
        return np.asarray(label_map) > 0

    # evaluation: the per-case numbers summaries average, how one case is scored, how a set is reported
    metric_names: tuple[str, ...] = ()

    def case_metrics(self, prediction: np.ndarray, reference: np.ndarray) -> dict:
        """A saved prediction against the raw reference label map (same shape)."""
        raise NotImplementedError

    def write_summary(self, folder, per_case: list[dict], extra: dict) -> dict:
        """summary.json / summary.csv of a set of cases (rows of case_metrics plus "case")."""
        raise NotImplementedError

    # post-processing candidates compared by cross-validation (tasks/teeth_postprocessing.py)
    postprocessing_candidates: tuple[str, ...] = ()


def lookup_table(mapping: dict[int, int], size: int = 256, missing: int = SegmentationTask.UNKNOWN) -> np.ndarray:
    table = np.full(size, missing, dtype=np.uint8)
    for key, value in mapping.items():
        table[int(key)] = value
    return table


def mirror_back(activated_flipped: torch.Tensor, order: list[int]) -> torch.Tensor:
    """The prediction of the left-right mirrored image in the unmirrored image's frame: mapped back
    spatially AND in its channels (the mirrored image shows the patient's sides swapped)."""
    return torch.flip(activated_flipped, dims=[3])[:, order]


def check_index_target(target: torch.Tensor) -> torch.Tensor:
    return target.long().squeeze(1) if target.dim() == 4 else target.long()
