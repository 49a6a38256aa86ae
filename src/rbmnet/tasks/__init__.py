"""Segmentation tasks by name: an explicit dict, and `build_task` that reads the plan and dataset.json.

`binary` (tooth vs background) and `teeth` (each tooth with its number, two numbering heads); see
docs/tasks.md. Training, inference and evaluation ask the task instead of assuming one.
"""
from __future__ import annotations

from rbmnet.errors import RbmnetError
from rbmnet.tasks.base import SegmentationTask
from rbmnet.tasks.binary import BinaryTask
from rbmnet.data.numbering import numbering_of, tooth_numbers
from rbmnet.tasks.teeth import NUMBERING_HEADS

def _binary(segmentation, augmentation, dataset_json: dict) -> SegmentationTask:
    return BinaryTask(segmentation.threshold, segmentation.dice_weight, segmentation.bce_weight)


def _teeth(segmentation, augmentation, dataset_json: dict) -> SegmentationTask:
    head = segmentation.numbering_head
    if head not in NUMBERING_HEADS:
        raise RbmnetError(f"segmentation.numbering_head '{head}' is unknown (known: {', '.join(NUMBERING_HEADS)})")
    return NUMBERING_HEADS[head](tooth_numbers(dataset_json), numbering_of(dataset_json),
                                 laterality_swap=augmentation.laterality_swap, dice_weight=segmentation.dice_weight,
                                 ce_weight=segmentation.bce_weight, threshold=segmentation.threshold)


TASKS = {"binary": _binary, "teeth": _teeth}


def build_task(plan, dataset_json: dict) -> SegmentationTask:
    """The task the plan's segmentation section names, for the labels dataset.json declares."""
    name = plan.segmentation.task
    if name not in TASKS:
        raise RbmnetError(f"segmentation.task '{name}' is unknown (known: {', '.join(TASKS)})")
    return TASKS[name](plan.segmentation, plan.augmentation, dataset_json)


def default_task_name(dataset_json: dict) -> str:
    """`teeth` when dataset.json declares a tooth numbering and several tooth labels, else `binary`."""
    numbered = dataset_json.get("tooth_numbering") is not None and len(tooth_numbers(dataset_json)) > 1
    return "teeth" if numbered else "binary"
