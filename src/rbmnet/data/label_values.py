"""Which label values a label map may plausibly hold: gradients are refused, stray values reported.

A label map holds one value per class. A mask that went through lossy compression, antialiasing or
resizing holds a ramp of values at every edge instead, and would otherwise become dozens of classes;
a single stray value (a few pixels left by an editor) would silently add a class, or switch a binary
dataset to a tooth numbering. The folder converter and the fingerprint apply these rules.
"""
from __future__ import annotations

import numpy as np

from rbmnet.errors import RbmnetError

# Background, 32 permanent and 20 primary teeth (FDI 51-85): more distinct values than any tooth
# numbering has is a gradient, not classes.
MAX_LABEL_VALUES = 1 + 32 + 20
# A value that covers no more than a handful of pixels, and a negligible share of the map, in every map
# holding it is no structure a network could learn (a tooth covers hundreds of pixels even on small
# radiographs): most likely a stray value. The share spares the teeth of very small test images.
STRAY_PIXELS = 20
STRAY_SHARE = 0.001
NOTES_SHOWN = 5  # stray-value notes listed one by one; the rest are counted


def value_counts(label: np.ndarray) -> dict[int, int]:
    """{value: pixels} of the values present in a uint8 label map."""
    counts = np.bincount(label.ravel(), minlength=256)  # np.unique, several times faster on uint8
    return {int(v): int(counts[v]) for v in np.flatnonzero(counts)}


def refuse_gradient(source: str, counts: dict[int, int]) -> None:
    """A one-line error naming `source` when its label map has more values than any numbering."""
    if len(counts) > MAX_LABEL_VALUES:
        values = sorted(counts)
        raise RbmnetError(
            f"{source}: {len(counts)} distinct label values ({values[0]}..{values[-1]}), more than any tooth "
            f"numbering has ({MAX_LABEL_VALUES} with background); this is a gradient (lossy compression, "
            f"antialiasing or resizing), not a label map: store label maps losslessly, one value per class")


def stray_value_notes(counts_by_source: dict[str, dict[int, int]]) -> list[str]:
    """One line per label map holding stray values: nonzero values of which no map has more than a few pixels."""
    plausible = {value for counts in counts_by_source.values() for value, pixels in counts.items()
                 if pixels > min(STRAY_PIXELS, STRAY_SHARE * sum(counts.values()))}
    stray = {value for counts in counts_by_source.values() for value in counts} - plausible - {0}
    notes = []
    for source, counts in sorted(counts_by_source.items()):
        found = sorted(stray & set(counts))
        if found:
            listed = ", ".join(f"{v} ({_pixels(counts[v])})" for v in found)
            word, pronoun = ("value", "it") if len(found) == 1 else ("values", "them")
            notes.append(f"{source}: label {word} {listed}; no label map has more than a handful of pixels "
                         f"of {pronoun}: a stray {word} (left by an editor or compression)?")
    if len(notes) > NOTES_SHOWN:
        notes = notes[:NOTES_SHOWN] + [f"{len(notes) - NOTES_SHOWN} more label map(s) hold stray values"]
    return notes


def _pixels(count: int) -> str:
    return f"{count} pixel" if count == 1 else f"{count} pixels"
