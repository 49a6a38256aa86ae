"""Metrics of a predicted tooth-number label map against a reference label map.

Both maps have the same shape and hold small non-negative integers: 0 is background, every other value
is a tooth number (FDI or Universal). A tooth is the set of pixels carrying one number, on one side.

    per_tooth_dice   Dice of (prediction == n) vs (reference == n) for every number n present in the
                     prediction or the reference (a number absent from both is left out)
    tooth_dice       mean of per_tooth_dice; 1.0 when both maps are empty (the empty rule of
                     segmentation_metrics: nothing to find and nothing found)
    matched          teeth with the same number on both sides and IoU >= 0.5
    identification_accuracy
                     matched / (predicted_teeth + reference_teeth - matched), as STS-MICCAI 2024 defines
                     it: the matched teeth over the union of predicted and reference teeth, a matched pair
                     counted once; 1.0 when both maps are empty
    wrong_side       reference teeth whose pixels predicted as teeth mostly (a strict plurality) carry the
                     contralateral number, i.e. the right tooth on the patient's wrong side
    wrong_side_rate  wrong_side / reference_teeth; 0.0 without reference teeth; NaN without a numbering
    missed           reference teeth that no predicted tooth of any number overlaps with IoU >= 0.5
    extra            predicted teeth that overlap no reference tooth of any number with IoU >= 0.5
    binary_*         case_metrics of the union of all teeth (prediction > 0 vs reference > 0)

Summaries (summarize_teeth): mean, median and population std (ddof=0) of TEETH_METRICS over cases, the
sums of TEETH_COUNTS (`sums`), the mean Dice of each tooth over the cases where it is on either side
(`per_tooth`), and pooled_identification_accuracy = sum matched / (sum predicted + sum reference - sum
matched), the identification accuracy of all teeth of all cases taken together.

Every IoU comes from one joint histogram of (predicted value, reference value) over the pixels.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rbmnet.evaluation.segmentation_metrics import case_metrics, summarize

if TYPE_CHECKING:  # a runtime import would be circular: rbmnet.tasks.teeth imports this module
    from rbmnet.data.numbering import ToothNumbering

TEETH_METRICS = ("tooth_dice", "identification_accuracy", "wrong_side_rate", "binary_dice")
TEETH_COUNTS = ("matched", "predicted_teeth", "reference_teeth", "wrong_side", "missed", "extra")
BINARY_METRICS = ("dice", "jaccard", "precision", "recall")


def teeth_case_metrics(prediction: np.ndarray, reference: np.ndarray, numbering: ToothNumbering | None) -> dict:
    """Per-tooth Dice, identification accuracy, wrong-side, missed and extra teeth of one case."""
    prediction, reference = np.asarray(prediction), np.asarray(reference)
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from reference shape {reference.shape}")
    joint = _joint_histogram(prediction, reference)
    predicted_area, reference_area = joint.sum(axis=1), joint.sum(axis=0)
    predicted = np.flatnonzero(predicted_area[1:]) + 1
    referenced = np.flatnonzero(reference_area[1:]) + 1

    # overlaps[p, r]: whether predicted tooth p and reference tooth r overlap with IoU >= 0.5
    # (compared as 2 * intersection >= union, exactly, in integers)
    intersection = joint[1:, 1:]
    union = predicted_area[1:, None] + reference_area[None, 1:] - intersection
    overlaps = (intersection > 0) & (2 * intersection >= union)

    numbers = np.union1d(predicted, referenced)
    same = joint[numbers, numbers]
    dice = 2 * same / (predicted_area[numbers] + reference_area[numbers])
    matched = int(np.count_nonzero(overlaps[numbers - 1, numbers - 1]))
    teeth = len(predicted) + len(referenced) - matched
    # without a known numbering there is no "other side": wrong_side stays 0 and its rate NaN (null in JSON)
    wrong_side = sum(_is_wrong_side(joint, int(number), numbering) for number in referenced) if numbering else 0

    metrics = {
        "per_tooth_dice": {int(n): float(d) for n, d in zip(numbers, dice)},
        "tooth_dice": float(dice.mean()) if len(numbers) else 1.0,
        "identification_accuracy": matched / teeth if teeth else 1.0,
        "matched": matched,
        "predicted_teeth": len(predicted),
        "reference_teeth": len(referenced),
        "wrong_side": wrong_side,
        "wrong_side_rate": (wrong_side / len(referenced) if len(referenced) else 0.0) if numbering else float("nan"),
        "missed": int(np.count_nonzero(~overlaps[:, referenced - 1].any(axis=0))),
        "extra": int(np.count_nonzero(~overlaps[predicted - 1, :].any(axis=1))),
    }
    binary = case_metrics(prediction > 0, reference > 0)
    metrics.update({f"binary_{name}": binary[name] for name in BINARY_METRICS})
    return metrics


def summarize_teeth(per_case: list[dict]) -> dict:
    """Mean, median, population std of TEETH_METRICS over cases, summed counts, per-tooth Dice means,
    and the identification accuracy pooled over all teeth of all cases."""
    summary = summarize(per_case, metrics=TEETH_METRICS)
    del summary["aggregate"]  # the binary tp/fp/fn/tn sums, absent from teeth cases
    totals = {count: int(sum(case[count] for case in per_case)) for count in TEETH_COUNTS}
    summary["sums"] = totals
    teeth = totals["predicted_teeth"] + totals["reference_teeth"] - totals["matched"]
    summary["pooled_identification_accuracy"] = totals["matched"] / teeth if teeth else 1.0

    # a tooth's mean counts only the cases where it is on either side (JSON round trips make keys str)
    dices: dict[int, list[float]] = {}
    for case in per_case:
        for number, dice in case["per_tooth_dice"].items():
            dices.setdefault(int(number), []).append(float(dice))
    summary["per_tooth"] = {str(number): {"dice_mean": float(np.mean(dices[number])), "cases": len(dices[number])}
                            for number in sorted(dices)}
    return summary


def _joint_histogram(prediction: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """joint[p, r] = number of pixels with predicted value p and reference value r."""
    if prediction.size == 0:
        return np.zeros((1, 1), dtype=np.int64)
    if min(prediction.min(), reference.min()) < 0:
        raise ValueError("tooth label maps hold non-negative integers (0 background, tooth numbers)")
    size = int(max(prediction.max(), reference.max())) + 1
    pairs = prediction.astype(np.int64).ravel() * size + reference.astype(np.int64).ravel()
    return np.bincount(pairs, minlength=size * size).reshape(size, size)


def _is_wrong_side(joint: np.ndarray, number: int, numbering: ToothNumbering) -> bool:
    """Whether the contralateral number holds more of reference tooth `number` than any other number."""
    predicted_numbers = joint[1:, number]
    contralateral = numbering.contralateral(number)
    if contralateral >= joint.shape[0]:
        return False
    held = predicted_numbers[contralateral - 1]
    others = np.delete(predicted_numbers, contralateral - 1)
    return bool(held > 0 and held > others.max(initial=0))
