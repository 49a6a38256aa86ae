"""The pretext report: reconstruction quality on the held-out images, and a figure like the paper's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rbmnet.evaluation.image_metrics import reconstruction_metrics, summarize_reconstruction
from rbmnet.evaluation.lpips_metric import load_lpips
from rbmnet.evaluation.reports import json_ready
from rbmnet.io.atomic import atomic_path, write_json
from rbmnet.layout import SUMMARY_JSON
from rbmnet.model.device import autocast
from rbmnet.model.sobel import sobel_magnitude

FIGURE_NAME = "reconstructions.png"


def reconstruct_all(network, images: np.ndarray, masks: np.ndarray, fill_value: float, device, batch_size: int):
    from rbmnet.training.pretext import reconstruct  # the training forward path, not a copy of it

    network.eval()
    out = []
    with torch.no_grad(), autocast(device):
        for start in range(0, len(images), batch_size):
            image = torch.from_numpy(images[start:start + batch_size])[:, None].to(device)
            mask = torch.from_numpy(masks[start:start + batch_size])[:, None].to(device)
            out.append(reconstruct(network, image, mask, fill_value)[:, 0].float().cpu().numpy())
    return np.concatenate(out)


def write_pretext_report(folder: Path, network, names: list[str], images: np.ndarray, masks: np.ndarray,
                         fill_value: float, device, batch_size: int = 4, lpips_weights=None) -> dict:
    folder = Path(folder)
    reconstructions = reconstruct_all(network, images, masks, fill_value, device, batch_size)
    masked_inputs = np.where(masks, np.float32(fill_value), images)
    lpips_metric = load_lpips(lpips_weights)
    per_image, per_input = [], []
    for name, prediction, masked, target, mask in zip(names, reconstructions, masked_inputs, images, masks):
        per_image.append({"case": name, **reconstruction_metrics(prediction, target, mask, lpips_metric or None)})
        # the masked input itself, scored the same way: the floor a useful reconstruction must beat
        per_input.append({"case": name, **reconstruction_metrics(masked, target, mask, None)})
    summary = {
        "num_images": len(names),
        "reconstruction": summarize_reconstruction(per_image),
        "masked_input": summarize_reconstruction(per_input),
        "lpips": "available" if not hasattr(lpips_metric, "reason") else f"unavailable: {lpips_metric.reason}",
        "masked_fraction_mean": float(masks.mean()),
        "per_image": per_image,
    }
    write_json(folder / SUMMARY_JSON, json_ready(summary))  # NaN (empty mask) becomes null, valid JSON
    write_reconstruction_figure(folder / FIGURE_NAME, names, masked_inputs, images, reconstructions)
    return summary


def write_reconstruction_figure(path: Path, names, masked_inputs, images, reconstructions, max_rows: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = min(max_rows, len(names))
    edges = sobel_magnitude(torch.from_numpy(images[:rows])[:, None]).numpy()[:, 0]
    columns = (("masked input", masked_inputs), ("Sobel of the radiograph", edges),
               ("reconstruction", reconstructions), ("target", images))
    height, width = images.shape[1:]
    fig, axes = plt.subplots(rows, 4, figsize=(4 * 3.2, rows * 3.2 * height / width + 0.4), squeeze=False)
    for row in range(rows):
        for col, (title, arrays) in enumerate(columns):
            axis = axes[row, col]
            axis.imshow(arrays[row], cmap="gray", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title, fontsize=9)
        axes[row, 0].set_ylabel(names[row], fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
