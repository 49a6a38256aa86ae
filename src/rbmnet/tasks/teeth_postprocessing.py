"""Post-processing of predicted tooth label maps, and the cross-validated choice among the candidates.

A label map holds 0 for background and a tooth number on every tooth pixel. Components are 8-connected
(full connectivity in the map's dimensions). The candidates (`VARIANTS`):

- `none`: the prediction as it is.
- `largest_component`: each tooth number keeps only its largest component (stray specks of a number
  far from its tooth go).
- `largest_component_and_min_size`: the same, then teeth smaller than params["min_size"] pixels go.
- `one_number_per_tooth`: each connected tooth region (whatever its numbers) takes the number most of
  its pixels carry, then each number keeps its largest component.

`decide_postprocessing` keeps a candidate only when it beats `none` on both mean tooth Dice and mean
identification accuracy over the validation cases, so post-processing is never adopted on one metric's
gain at the other's expense.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
from scipy import ndimage
from skimage import measure

from rbmnet.errors import RbmnetError
from rbmnet.evaluation.numbering_metrics import teeth_case_metrics
from rbmnet.data.numbering import ToothNumbering

DECISION_RULE = ("a candidate is eligible only if its mean tooth Dice and its mean identification accuracy are "
                 "both strictly greater than those of 'none'; the eligible candidate with the highest mean tooth "
                 "Dice (then identification accuracy, then the earlier listed) is chosen, else 'none'")


def largest_component_per_tooth(label_map: np.ndarray) -> np.ndarray:
    """Each tooth number keeps only its largest component (the first in scan order on a tie)."""
    return _filter_components(label_map, _largest_of_each_number)


def drop_small_components(label_map: np.ndarray, min_size: int) -> np.ndarray:
    """Components of each tooth number smaller than min_size pixels become background."""
    return _filter_components(label_map, lambda sizes, numbers: sizes >= min_size)


def one_number_per_tooth(label_map: np.ndarray) -> np.ndarray:
    """Each connected foreground region takes the number held by most of its pixels (ties: the smaller)."""
    label_map = np.asarray(label_map)
    values, value_index = np.unique(label_map, return_inverse=True)
    regions, num_regions = ndimage.label(label_map > 0, structure=_full_connectivity(label_map.ndim))
    # votes[region, value]: pixels of the region with that value; one histogram instead of a loop over regions
    votes = np.bincount(regions.ravel() * len(values) + value_index.ravel(),
                        minlength=(num_regions + 1) * len(values)).reshape(num_regions + 1, len(values))
    votes[:, values == 0] = 0
    number_of_region = values[votes.argmax(axis=1)]  # argmax takes the first, i.e. smaller, number on a tie
    number_of_region[0] = 0
    return number_of_region[regions].astype(label_map.dtype, copy=False)


def min_tooth_size(label_maps: Iterable[np.ndarray], scale: float = 1.0) -> int:
    """The smallest size a predicted tooth may have, learned from training reference label maps.

    Rule: floor(0.5 * the 1st percentile (linear interpolation) of the areas of all teeth), a tooth being
    one number in one map and its area that number's pixel count times `scale`. Pass the maps at the
    resolution the predictions have (scale 1); `scale` converts areas otherwise (prediction pixels per
    reference pixel).
    """
    areas = []
    for label_map in label_maps:
        counts = np.bincount(np.asarray(label_map, dtype=np.int64).ravel())
        areas.append(counts[1:][counts[1:] > 0])
    areas = np.concatenate(areas) if areas else np.zeros(0)
    if areas.size == 0:
        raise RbmnetError("no teeth in the reference label maps: cannot learn a minimum tooth size")
    return int(math.floor(0.5 * np.percentile(areas * scale, 1)))


VARIANTS = {
    "none": lambda label_map, params: np.asarray(label_map),
    "largest_component": lambda label_map, params: largest_component_per_tooth(label_map),
    "largest_component_and_min_size": lambda label_map, params: drop_small_components(
        largest_component_per_tooth(label_map), int(params["min_size"])),
    "one_number_per_tooth": lambda label_map, params: largest_component_per_tooth(one_number_per_tooth(label_map)),
}
REQUIRED_PARAMS = {"largest_component_and_min_size": ("min_size",)}


def decide_postprocessing(cases: list[tuple[np.ndarray, np.ndarray]], numbering: ToothNumbering, params: dict,
                          candidates: list[str]) -> dict:
    """Score `none` and each candidate on the (prediction, reference) validation cases; see DECISION_RULE."""
    if not cases:
        raise RbmnetError("no validation cases to decide the teeth post-processing on")
    names = ["none"] + [name for name in dict.fromkeys(candidates) if name != "none"]
    for name in names:
        _check_variant(name, params)
    scores = {name: _mean_scores(VARIANTS[name], cases, numbering, params) for name in names}
    baseline = scores["none"]
    eligible = [name for name in names[1:]
                if scores[name]["tooth_dice"] > baseline["tooth_dice"]
                and scores[name]["identification_accuracy"] > baseline["identification_accuracy"]]
    chosen = max(eligible, key=lambda name: (scores[name]["tooth_dice"], scores[name]["identification_accuracy"]),
                 default="none")
    return {"chosen": chosen, "params": dict(params), "rule": DECISION_RULE, "scores": scores}


def apply_postprocessing(label_map: np.ndarray, decision: dict) -> np.ndarray:
    """The label map post-processed as a decision of decide_postprocessing (e.g. postprocessing.json) says."""
    name, params = decision["chosen"], decision.get("params", {})
    _check_variant(name, params)
    return VARIANTS[name](label_map, params)


def _mean_scores(variant, cases, numbering: ToothNumbering, params: dict) -> dict:
    per_case = [teeth_case_metrics(variant(prediction, params), reference, numbering)
                for prediction, reference in cases]
    return {"tooth_dice": float(np.mean([case["tooth_dice"] for case in per_case])),
            "identification_accuracy": float(np.mean([case["identification_accuracy"] for case in per_case])),
            "num_cases": len(per_case)}


def _check_variant(name: str, params: dict) -> None:
    if name not in VARIANTS:
        raise RbmnetError(f"teeth post-processing '{name}' is unknown (known: {', '.join(VARIANTS)})")
    missing = [key for key in REQUIRED_PARAMS.get(name, ()) if key not in params]
    if missing:
        raise RbmnetError(f"teeth post-processing '{name}' needs params {', '.join(missing)}")


def _filter_components(label_map: np.ndarray, keep) -> np.ndarray:
    """The label map with only the components that keep(sizes, numbers) accepts (one entry per component)."""
    label_map = np.asarray(label_map)
    # one pass labels every number's components: neighbours join only when they carry the same number
    components = measure.label(label_map, background=0, connectivity=label_map.ndim)
    sizes = np.bincount(components.ravel())[1:]
    numbers = np.zeros(len(sizes) + 1, dtype=label_map.dtype)
    numbers[components] = label_map
    kept = np.concatenate([[False], keep(sizes, numbers[1:])])
    return np.where(kept[components], label_map, 0).astype(label_map.dtype, copy=False)


def _largest_of_each_number(sizes: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    # components sorted by number, then size descending, then scan order: each number's first is kept
    order = np.lexsort((np.arange(len(sizes)), -sizes, numbers))
    _, first = np.unique(numbers[order], return_index=True)
    kept = np.zeros(len(sizes), dtype=bool)
    kept[order[first]] = True
    return kept


def _full_connectivity(ndim: int) -> np.ndarray:
    # 8-connectivity in 2D: diagonal neighbours belong to the same tooth
    return ndimage.generate_binary_structure(ndim, ndim)
