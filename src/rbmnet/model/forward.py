"""From preprocessed images to probabilities: the one forward path that validation and prediction share."""
from __future__ import annotations

import numpy as np
import torch

from rbmnet.model.device import autocast
from rbmnet.model.sobel import network_input
from rbmnet.tasks.base import SegmentationTask, flip_tta


def probabilities(network: torch.nn.Module, images: torch.Tensor, task: SegmentationTask,
                  tta: bool = False) -> torch.Tensor:
    """(B,1,H,W) normalized images -> (B,C,H,W) float32 probabilities (the task's activation).

    Test-time augmentation mirrors along the width only (training mirrors that axis, never the
    vertical one: upper and lower teeth differ) and maps the mirrored prediction back through the
    task's channel permutation: the mirrored image shows the patient's sides swapped. A task whose
    labels allow no left-right flip gets no mirrored pass.
    """
    with torch.no_grad(), autocast(images.device):
        result = task.activate(network(network_input(images)).float())
        order = task.channel_flip_order
        if tta and order is not None:
            flipped = task.activate(network(network_input(torch.flip(images, dims=[3]))).float())
            result = flip_tta(result, flipped, order)
    return result


def predict_arrays(network: torch.nn.Module, images: np.ndarray, device: torch.device, task: SegmentationTask,
                   batch_size: int = 4, tta: bool = False) -> np.ndarray:
    """(N,H,W) preprocessed images (any float dtype) -> (N,C,H,W) float32 probabilities."""
    network.eval()
    out = []
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.asarray(images[start:start + batch_size], dtype=np.float32))[:, None]
        out.append(probabilities(network, chunk.to(device), task, tta=tta).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, task.output_channels, *images.shape[1:]), np.float32)
