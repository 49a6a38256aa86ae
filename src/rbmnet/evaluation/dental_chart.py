"""A dental chart: the 32 permanent teeth in two arches, each box coloured by a score (per-tooth Dice).

Standard layout as the dentist faces the patient: upper arch on top from the patient's right third
molar (FDI 18) to the left one (28), lower arch below from 48 to 38. Box labels use the dataset's own
numbering (FDI or Universal); a tooth without a score is drawn grey with "-".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rbmnet.io.atomic import atomic_path
from rbmnet.data.numbering import FDI, ToothNumbering

# (quadrant, position) of each box, left to right: row 0 the upper arch, row 1 the lower arch
CHART_ROWS = (
    [(1, p) for p in range(8, 0, -1)] + [(2, p) for p in range(1, 9)],
    [(4, p) for p in range(8, 0, -1)] + [(3, p) for p in range(1, 9)],
)


def chart_numbers(numbering: ToothNumbering | None) -> list[list[int]]:
    """The tooth numbers shown in the chart's two rows (FDI when the numbering is unknown)."""
    numbering = numbering or FDI("FDI")
    return [[numbering.from_quadrant_position(q, p) for q, p in row] for row in CHART_ROWS]


def write_dental_chart(path: str | Path, scores: dict[int, float], numbering: ToothNumbering | None,
                       title: str = "", score_name: str = "Dice") -> Path:
    """Draw the chart with `scores` (tooth number -> value in [0, 1]) and save it as PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    colours, norm = colormaps["RdYlGn"], Normalize(0.0, 1.0)
    fig, ax = plt.subplots(figsize=(10, 3.2))
    for row, numbers in enumerate(chart_numbers(numbering)):
        for col, number in enumerate(numbers):
            value = scores.get(number)
            known = value is not None and np.isfinite(value)
            x, y = col + (0.3 if col >= 8 else 0.0), 1.2 - row * 1.2  # a gap at the midline
            ax.add_patch(Rectangle((x, y), 0.9, 1.0, facecolor=colours(norm(value)) if known else "0.85",
                                   edgecolor="0.3"))
            ax.text(x + 0.45, y + 0.68, str(number), ha="center", va="center", fontsize=9, weight="bold")
            ax.text(x + 0.45, y + 0.3, f"{value:.2f}" if known else "-", ha="center", va="center", fontsize=8)
    ax.text(-0.2, 1.7, "R", ha="right", va="center", fontsize=10)
    ax.text(16.5, 1.7, "L", ha="left", va="center", fontsize=10)
    ax.set_xlim(-0.5, 16.8)
    ax.set_ylim(-0.1, 2.3)
    ax.axis("off")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=colours), ax=ax, fraction=0.025, pad=0.01,
                 label=score_name)
    ax.set_title(title or f"{score_name} per tooth (upper arch on top, patient's right on the left)", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path
