"""From preprocessed images to probabilities: the one forward path that validation and prediction share.

`ProbabilityNetwork` is the model a fold computes (normalized image -> probabilities): the torch
backend runs it and rbmnet_export traces it into ONNX, so the two cannot drift apart. A backend turns
a fold into a `FoldPredictor`; mirror TTA (`predictor_passes`) and fold ensembling work on those, the
same for every backend.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from rbmnet.model.device import autocast
from rbmnet.model.sobel import network_input
from rbmnet.tasks.base import SegmentationTask, mirror_back


# (B,1,H,W) float32 normalized images -> (B,C,H,W) float32 probabilities, on the backend's device
FoldPredictor = Callable[[np.ndarray], torch.Tensor]


class ProbabilityNetwork(torch.nn.Module):
    """(B,1,H,W) normalized images -> (B,C,H,W) probabilities: the Sobel channel, the network and the
    task's activation in one module."""

    def __init__(self, network: torch.nn.Module, task: SegmentationTask):
        super().__init__()
        self.network = network
        self.task = task  # a plain object, not a module: only its activation is used

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.task.activate(self.network(network_input(images)).float())


def torch_predictor(network: torch.nn.Module, task: SegmentationTask, device: torch.device) -> FoldPredictor:
    """The torch backend of one fold: `network` (on `device`, in the mode the caller set) with results
    left on `device`."""
    model = ProbabilityNetwork(network, task)

    def predict(images: np.ndarray) -> torch.Tensor:
        batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(device)
        # inference_mode: no autograd bookkeeping at all (cheaper than no_grad alone)
        with torch.inference_mode(), autocast(device):
            return model(batch).float()

    return predict


def predictor_passes(predict: FoldPredictor, images: np.ndarray, order: list[int] | None,
                     tta: bool = False) -> list[torch.Tensor]:
    """(B,1,H,W) images -> [plain] or, with TTA, [plain, mirrored], each in the unmirrored image's frame;
    `order` is the task's channel_flip_order (None: the labels allow no mirrored pass)."""
    passes = [predict(images)]
    if tta and order is not None:
        passes.append(mirror_back(predict(np.ascontiguousarray(images[..., ::-1])), order))
    return passes


def probabilities(network: torch.nn.Module, images: torch.Tensor, task: SegmentationTask,
                  tta: bool = False) -> torch.Tensor:
    """(B,1,H,W) normalized images -> (B,C,H,W) float32 probabilities (the task's activation).

    Test-time augmentation mirrors along the width only (training mirrors that axis, never the
    vertical one: upper and lower teeth differ) and maps the mirrored prediction back through the
    task's channel permutation: the mirrored image shows the patient's sides swapped. A task whose
    labels allow no left-right flip gets no mirrored pass.
    """
    return average_passes(probability_passes(network, images, task, tta))


def probability_passes(network: torch.nn.Module, images: torch.Tensor, task: SegmentationTask,
                       tta: bool = False) -> list[torch.Tensor]:
    """The passes `probabilities` averages, each in the unmirrored image's frame: [plain], or with TTA
    [plain, mirrored] (kept apart so that prediction can measure how much they agree)."""
    predict = torch_predictor(network, task, images.device)
    return predictor_passes(predict, images.cpu().numpy(), task.channel_flip_order, tta)


def average_passes(passes: list[torch.Tensor]) -> torch.Tensor:
    return passes[0] if len(passes) == 1 else sum(passes) / len(passes)


def predict_arrays(network: torch.nn.Module, images: np.ndarray, device: torch.device, task: SegmentationTask,
                   batch_size: int = 4, tta: bool = False) -> np.ndarray:
    """(N,H,W) preprocessed images (any float dtype) -> (N,C,H,W) float32 probabilities."""
    network.eval()
    predict = torch_predictor(network, task, device)
    out = []
    for start in range(0, len(images), batch_size):
        chunk = np.asarray(images[start:start + batch_size], dtype=np.float32)[:, None]
        passes = predictor_passes(predict, chunk, task.channel_flip_order, tta)
        out.append(average_passes(passes).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, task.output_channels, *images.shape[1:]), np.float32)
