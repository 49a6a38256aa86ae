"""Overlap metrics of a predicted mask against a reference mask: Dice, Jaccard, precision, recall.

Masks are arrays of the same shape; any nonzero value is foreground.

    dice      = 2 TP / (2 TP + FP + FN)
    jaccard   = TP / (TP + FP + FN)
    precision = TP / (TP + FP)
    recall    = TP / (TP + FN)

Empty rule (the one rule for every 0/0 above, see EMPTY_RULE): a ratio whose denominator is zero is
1.0 when prediction and reference are both empty (nothing to find and nothing found: perfect
agreement) and 0.0 otherwise (a disagreement never scores as success). So:
  both empty                      -> dice = jaccard = precision = recall = 1.0
  reference empty, prediction not -> dice = jaccard = precision = 0.0, recall (0/0) = 0.0
  prediction empty, reference not -> dice = jaccard = recall = 0.0, precision (0/0) = 0.0
Every case therefore has a number (nnU-Net writes NaN for both-empty and drops it from the mean).

Summaries give mean, median and the population standard deviation (ddof=0) over cases, and the
sums of TP/FP/FN/TN over cases.
"""
from __future__ import annotations

import numpy as np

METRICS = ("dice", "jaccard", "precision", "recall")
COUNTS = ("tp", "fp", "fn", "tn")
EMPTY_RULE = ("0/0 ratios are 1.0 when prediction and reference are both empty, else 0.0 "
              "(both empty: all metrics 1; one side empty: dice, jaccard, precision, recall 0)")


def case_metrics(prediction: np.ndarray, reference: np.ndarray) -> dict:
    """Counts (tp, fp, fn, tn as int) and the four metrics (float) of one binary case."""
    prediction = np.asarray(prediction).astype(bool, copy=False)
    reference = np.asarray(reference).astype(bool, copy=False)
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from reference shape {reference.shape}")
    tp = int(np.count_nonzero(prediction & reference))
    fp = int(np.count_nonzero(prediction & ~reference))
    fn = int(np.count_nonzero(~prediction & reference))
    tn = int(prediction.size - tp - fp - fn)
    both_empty = tp + fp + fn == 0
    return {
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, both_empty),
        "jaccard": _ratio(tp, tp + fp + fn, both_empty),
        "precision": _ratio(tp, tp + fp, both_empty),
        "recall": _ratio(tp, tp + fn, both_empty),
    }


def case_metrics_multiclass(prediction_labels: np.ndarray, reference_labels: np.ndarray,
                            labels: list[int]) -> dict[int, dict]:
    """case_metrics of each label taken as its own binary mask (label == value on both sides)."""
    prediction_labels = np.asarray(prediction_labels)
    reference_labels = np.asarray(reference_labels)
    return {int(label): case_metrics(prediction_labels == label, reference_labels == label)
            for label in labels}


def summarize(per_case: list[dict], metrics=METRICS) -> dict:
    """Mean, median, population std (ddof=0) of each metric over cases, and summed counts."""
    if not per_case:
        raise ValueError("summarize needs at least one case")
    summary = {"num_cases": len(per_case), "mean": {}, "median": {}, "std": {}}
    for metric in metrics:
        values = np.array([float(case[metric]) for case in per_case])
        summary["mean"][metric] = float(np.mean(values))
        summary["median"][metric] = float(np.median(values))
        summary["std"][metric] = float(np.std(values, ddof=0))
    summary["aggregate"] = {count: int(sum(case[count] for case in per_case))
                            for count in COUNTS if all(count in case for case in per_case)}
    return summary


def _ratio(numerator: int, denominator: int, both_empty: bool) -> float:
    if denominator == 0:
        return 1.0 if both_empty else 0.0
    return numerator / denominator
