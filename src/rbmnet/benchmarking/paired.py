"""Paired differences between two arms of a benchmark, with a 95 % interval.

The arms are compared on the same validation cases of the same folds, trained with the same seeds
(the seed also draws the labeled subset, so both arms learn from the same cases). A unit is one
(fold, seed) that both arms finished; its difference is the mean over its validation cases of
(arm - reference). The interval is a two-level percentile bootstrap: units are resampled with
replacement, then the cases within each drawn unit, so that it widens with the spread between
seeds as well as between cases (with one unit it is the usual case bootstrap).
"""
from __future__ import annotations

import numpy as np

BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95


def case_values(summary: dict, metric: str) -> dict[str, float]:
    return {row["case"]: float(row[metric]) for row in summary.get("per_case", []) if row.get(metric) is not None}


def unit_differences(pairs: list[tuple[dict, dict]], metric: str) -> list[np.ndarray]:
    """Per unit, the per-case differences (arm - reference) over the cases both summaries hold."""
    units = []
    for arm, reference in pairs:
        a, b = case_values(arm, metric), case_values(reference, metric)
        cases = sorted(set(a) & set(b))
        if cases:
            units.append(np.array([a[c] - b[c] for c in cases]))
    return units


def paired_difference(pairs: list[tuple[dict, dict]], metric: str, seed: int = 0) -> dict | None:
    """{mean, ci95, units, cases} for `metric`, or None when no unit has cases in common."""
    units = unit_differences(pairs, metric)
    if not units:
        return None
    rng = np.random.default_rng(seed)
    means = np.empty(BOOTSTRAP_SAMPLES)
    for sample in range(BOOTSTRAP_SAMPLES):
        drawn = rng.integers(0, len(units), size=len(units))
        means[sample] = np.mean([units[u][rng.integers(0, len(units[u]), size=len(units[u]))].mean() for u in drawn])
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"mean": float(np.mean([u.mean() for u in units])), "ci95": [float(low), float(high)],
            "units": len(units), "cases": int(sum(len(u) for u in units))}
