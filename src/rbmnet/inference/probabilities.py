"""From preprocessed images to probabilities: the one forward path that validation and prediction share."""
from __future__ import annotations

import numpy as np
import torch

from rbmnet.training.device import autocast
from rbmnet.training.sobel import network_input


def probabilities(network: torch.nn.Module, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """(B,1,H,W) normalized images -> (B,C,H,W) float32 probabilities (sigmoid; binary task).

    Test-time augmentation mirrors along the width only: training mirrors that axis (left/right jaw),
    never the vertical one (upper and lower teeth differ).
    """
    with torch.no_grad(), autocast(images.device):
        result = torch.sigmoid(network(network_input(images)).float())
        if tta:
            flipped = torch.flip(images, dims=[3])
            result = 0.5 * (result + torch.flip(torch.sigmoid(network(network_input(flipped)).float()), dims=[3]))
    return result


def predict_arrays(network: torch.nn.Module, images: np.ndarray, device: torch.device,
                   batch_size: int = 4, tta: bool = False) -> np.ndarray:
    """(N,H,W) preprocessed images (any float dtype) -> (N,C,H,W) float32 probabilities."""
    network.eval()
    out = []
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.asarray(images[start:start + batch_size], dtype=np.float32))[:, None]
        out.append(probabilities(network, chunk.to(device), tta=tta).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1, *images.shape[1:]), np.float32)
