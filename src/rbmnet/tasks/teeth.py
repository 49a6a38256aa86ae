"""Task `teeth`: every tooth with its number (FDI or Universal, from dataset.json).

Index map: 0 background, 1..K the tooth labels of dataset.json in ascending value. Two numbering
heads share everything but the network output (`NUMBERING_HEADS`):

- `classes`: K + 1 softmax channels, one per tooth label plus background; loss Dice (averaged over the
  classes present) + cross-entropy. What nnU-Net does.
- `factorized`: 1 + 4 + 8 channels: tooth vs background (sigmoid; Dice + BCE), quadrant (softmax over
  4) and position from the midline (softmax over 8, shared by the four quadrants, so every first molar
  trains the same channel), the last two with cross-entropy on tooth pixels only. A pixel's number is
  quadrant x position, translated back to the dataset's numbering. Needs a known numbering.

A left-right flip swaps the patient's sides: index i becomes the index of the contralateral tooth.
Without a known numbering (or when a contralateral tooth is not declared) flips are not allowed.
`laterality_swap=False` makes flips naive (labels kept, as nnU-Net does); for ablation only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rbmnet.errors import RbmnetError
from rbmnet.evaluation.numbering_metrics import TEETH_METRICS, teeth_case_metrics
from rbmnet.evaluation.teeth_reports import CHART_PNG, write_teeth_summary
from rbmnet.tasks.base import SegmentationTask, SumsReducer, check_index_target, lookup_table
from rbmnet.tasks.losses import dice_bce_loss, dice_ce_loss, masked_cross_entropy
from rbmnet.data.numbering import PERMANENT_QUADRANTS, POSITIONS, ToothNumbering

IGNORE = -100


class TeethTask(SegmentationTask):
    name = "teeth"
    head = ""
    metric_names = TEETH_METRICS
    postprocessing_candidates = ("largest_component", "largest_component_and_min_size")

    def __init__(self, numbers: list[int], numbering: ToothNumbering | None, laterality_swap: bool = True,
                 dice_weight: float = 0.7, ce_weight: float = 0.3, threshold: float = 0.5):
        if len(numbers) < 2:
            raise RbmnetError(f"task teeth needs several tooth labels in dataset.json; it declares {len(numbers)} "
                              f"foreground label(s) {numbers}: use task binary")
        self.numbers = sorted(int(n) for n in numbers)
        self.numbering = numbering
        self.dice_weight, self.ce_weight, self.threshold = dice_weight, ce_weight, threshold
        if numbering is not None:
            invalid = [n for n in self.numbers if not numbering.is_valid(n)]
            if invalid:
                raise RbmnetError(f"dataset.json labels {invalid[:8]} are not {numbering.name} tooth numbers")
        index_of = {number: i + 1 for i, number in enumerate(self.numbers)}
        self.label_lookup = lookup_table({0: 0, **index_of})
        self.number_of_index = np.array([0, *self.numbers], dtype=np.uint8)
        self.flip_lookup, self.note = self._flip_lookup(index_of, laterality_swap)

    def _flip_lookup(self, index_of: dict[int, int], laterality_swap: bool) -> tuple[np.ndarray | None, str]:
        identity = np.arange(len(self.numbers) + 1, dtype=np.uint8)
        if not laterality_swap:
            return identity, "left-right flips keep the tooth numbers (naive flips: ablation only)"
        if self.numbering is None:
            return None, "tooth numbering unknown (dataset.json tooth_numbering is null): no left-right flips"
        missing = [n for n in self.numbers if self.numbering.contralateral(n) not in index_of]
        if missing:
            return None, (f"the contralateral teeth of {missing[:4]} are not declared in dataset.json: "
                          f"no left-right flips")
        table = np.array([0] + [index_of[self.numbering.contralateral(n)] for n in self.numbers], dtype=np.uint8)
        return table, ""

    @property
    def num_classes(self) -> int:
        return len(self.numbers) + 1

    @property
    def model_id_tag(self) -> str:
        return f"__teeth-{self.head}"

    def index_to_labels(self, index: np.ndarray) -> np.ndarray:
        return self.number_of_index[index]

    def case_metrics(self, prediction: np.ndarray, reference: np.ndarray) -> dict:
        return teeth_case_metrics(prediction, reference, self.numbering)

    def write_summary(self, folder, per_case: list[dict], extra: dict) -> dict:
        """The chart goes beside the folder (validation/ holds only predictions)."""
        return write_teeth_summary(folder, per_case, extra, self.numbering, chart_path=Path(folder).parent / CHART_PNG)


class ClassesTeethTask(TeethTask):
    head = "classes"

    @property
    def output_channels(self) -> int:
        return len(self.numbers) + 1

    @property
    def channel_flip_order(self) -> list[int] | None:
        return None if self.flip_lookup is None else [int(i) for i in self.flip_lookup]

    def loss(self, logits: torch.Tensor, target: torch.Tensor, sums_reducer: SumsReducer = None) -> torch.Tensor:
        return dice_ce_loss(logits, check_index_target(target), self.dice_weight, self.ce_weight,
                            sums_reducer=sums_reducer)

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=1)

    def tooth_probability(self, probabilities: np.ndarray) -> np.ndarray:
        return 1.0 - probabilities[0]  # channel 0 is the background

    def to_index(self, probabilities) -> np.ndarray:
        if isinstance(probabilities, torch.Tensor):
            return probabilities.argmax(dim=-3).to(torch.uint8).cpu().numpy()
        return probabilities.argmax(axis=-3).astype(np.uint8)


QUADRANT_CHANNELS = slice(1, 1 + len(PERMANENT_QUADRANTS))
POSITION_CHANNELS = slice(1 + len(PERMANENT_QUADRANTS), 1 + len(PERMANENT_QUADRANTS) + len(POSITIONS))


class FactorizedTeethTask(TeethTask):
    head = "factorized"
    postprocessing_candidates = TeethTask.postprocessing_candidates + ("one_number_per_tooth",)

    def __init__(self, numbers: list[int], numbering: ToothNumbering | None, **kwargs):
        super().__init__(numbers, numbering, **kwargs)
        if numbering is None:
            raise RbmnetError("numbering head 'factorized' needs a tooth numbering (dataset.json tooth_numbering "
                              "FDI or universal); use --set segmentation.numbering_head=\"classes\"")
        quadrant, position = [IGNORE], [IGNORE]
        for number in self.numbers:
            q, p = numbering.to_quadrant_position(number)
            if q not in PERMANENT_QUADRANTS:
                raise RbmnetError(f"numbering head 'factorized' covers permanent teeth only; dataset.json declares "
                                  f"{number}: use segmentation.numbering_head \"classes\"")
            quadrant.append(q - 1)
            position.append(p - 1)
        # index -> (quadrant, position) targets; kept per device so no step copies it there again
        self.quadrant_position_of_index = torch.tensor([quadrant, position])
        self._tables_on: dict[torch.device, torch.Tensor] = {}
        # (quadrant, position) -> index; 0 where the dataset declares no such tooth
        self.index_of_qp = np.zeros((len(PERMANENT_QUADRANTS), len(POSITIONS)), dtype=np.uint8)
        for i, (q, p) in enumerate(zip(quadrant[1:], position[1:]), start=1):
            self.index_of_qp[q, p] = i

    @property
    def output_channels(self) -> int:
        return 1 + len(PERMANENT_QUADRANTS) + len(POSITIONS)

    @property
    def channel_flip_order(self) -> list[int] | None:
        if self.flip_lookup is None:
            return None
        if np.array_equal(self.flip_lookup, np.arange(len(self.flip_lookup))):
            return list(range(self.output_channels))  # naive flips: nothing to swap
        quadrants = [QUADRANT_CHANNELS.start + (q - 1) for q in (2, 1, 4, 3)]  # 1 <-> 2, 3 <-> 4
        return [0, *quadrants, *range(POSITION_CHANNELS.start, POSITION_CHANNELS.stop)]

    def loss(self, logits: torch.Tensor, target: torch.Tensor, sums_reducer: SumsReducer = None) -> torch.Tensor:
        logits = logits.float()
        index = check_index_target(target)
        tooth = (index > 0).to(logits.dtype)[:, None]
        if index.device not in self._tables_on:
            self._tables_on[index.device] = self.quadrant_position_of_index.to(index.device)
        quadrant, position = self._tables_on[index.device][:, index]
        return (dice_bce_loss(logits[:, :1], tooth, self.dice_weight, self.ce_weight, sums_reducer=sums_reducer)
                + masked_cross_entropy(logits[:, QUADRANT_CHANNELS], quadrant, IGNORE)
                + masked_cross_entropy(logits[:, POSITION_CHANNELS], position, IGNORE))

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return torch.cat([torch.sigmoid(logits[:, :1]), torch.softmax(logits[:, QUADRANT_CHANNELS], dim=1),
                          torch.softmax(logits[:, POSITION_CHANNELS], dim=1)], dim=1)

    def to_index(self, probabilities) -> np.ndarray:
        if isinstance(probabilities, torch.Tensor):
            probabilities = probabilities.float().cpu().numpy()
        channels = probabilities.ndim - 3
        tooth = np.take(probabilities, 0, axis=channels) > self.threshold
        quadrant = np.take(probabilities, range(QUADRANT_CHANNELS.start, QUADRANT_CHANNELS.stop),
                           axis=channels).argmax(axis=channels)
        position = np.take(probabilities, range(POSITION_CHANNELS.start, POSITION_CHANNELS.stop),
                           axis=channels).argmax(axis=channels)
        return np.where(tooth, self.index_of_qp[quadrant, position], 0).astype(np.uint8)


NUMBERING_HEADS: dict[str, type[TeethTask]] = {"classes": ClassesTeethTask, "factorized": FactorizedTeethTask}
