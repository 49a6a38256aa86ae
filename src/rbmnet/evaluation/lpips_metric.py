"""LPIPS (the `lpips` package: AlexNet, v0.1, the default) with offline backbone weights (see docs/metrics.md).

LPIPS compares deep features of an ImageNet-pretrained backbone through linear layers. The linear
layers ship inside the lpips wheel; the backbone weights are normally downloaded, which cannot happen
here. So the module is built with a random backbone (`pnet_rand=True`, no download) and the backbone
is then overwritten, completely (strict loading), from the first source that exists:
  1. the `weights` argument, else the RBMNET_LPIPS_WEIGHTS environment variable: a features file,
     a state dict of torchvision's `alexnet().features` (keys "0.weight" ... "10.bias");
  2. the torch hub cache: torchvision's official checkpoint alexnet-owt-7be5be79.pth (its
     "features.*" keys).
Otherwise load_lpips returns LpipsUnavailable with the reason: never a number from a random backbone.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rbmnet.compat.torchvision_cpu import import_lpips

WEIGHTS_VARIABLE = "RBMNET_LPIPS_WEIGHTS"
HUB_CHECKPOINT = "alexnet-owt-7be5be79.pth"


@dataclass(frozen=True)
class LpipsUnavailable:
    reason: str

    def __bool__(self) -> bool:  # lets callers write `if metric:` for "LPIPS can be measured"
        return False


class LpipsMetric:
    """LPIPS distance of two grayscale images in [0, 1] (repeated to 3 channels, scaled to [-1, 1])."""

    def __init__(self, model: torch.nn.Module, source: str, device: torch.device):
        self.model = model
        self.source = source
        self.device = device

    def __call__(self, prediction: np.ndarray, target: np.ndarray) -> float:
        """Spatially averaged distance, as lpips reports it."""
        with torch.no_grad():
            return float(self.model(self._tensor(prediction), self._tensor(target)))

    def masked(self, prediction: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
        """Mean of LPIPS's per-pixel distance map (spatial=True) over the masked pixels."""
        self.model.spatial = True  # lpips reads this flag in forward(); restored below
        try:
            with torch.no_grad():
                distance_map = self.model(self._tensor(prediction), self._tensor(target))[0, 0]
        finally:
            self.model.spatial = False
        selected = torch.from_numpy(np.asarray(mask).astype(bool)).to(distance_map.device)
        return float(distance_map[selected].mean())

    def _tensor(self, image: np.ndarray) -> torch.Tensor:
        image = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
        tensor = torch.from_numpy(image)[None, None].repeat(1, 3, 1, 1)
        return (tensor * 2.0 - 1.0).to(self.device)


def load_lpips(weights: str | Path | None = None, device: str | torch.device = "cpu") -> LpipsMetric | LpipsUnavailable:
    """LPIPS with pretrained backbone weights from the first available source, else LpipsUnavailable(reason)."""
    features, source_or_reason = _find_features(weights)
    if features is None:
        return LpipsUnavailable(source_or_reason)
    lpips = import_lpips()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's 'pretrained is deprecated' notes
        model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    try:
        model.net.load_state_dict(_backbone_state(model.net, features), strict=True)
    except (KeyError, RuntimeError) as exc:
        return LpipsUnavailable(f"{source_or_reason}: not AlexNet features weights ({exc.__class__.__name__}: "
                                f"{str(exc).splitlines()[0]})")
    device = torch.device(device)
    return LpipsMetric(model.to(device).eval(), source_or_reason, device)


def _find_features(weights: str | Path | None) -> tuple[dict | None, str]:
    """(features state dict, source) or (None, reason)."""
    named = weights if weights is not None else os.environ.get(WEIGHTS_VARIABLE)
    if named:
        return _load_features(Path(named).expanduser(), prefix="")
    hub_file = Path(torch.hub.get_dir()) / "checkpoints" / HUB_CHECKPOINT
    if hub_file.is_file():
        return _load_features(hub_file, prefix="features.")
    return None, (f"no AlexNet weights: none named (argument or {WEIGHTS_VARIABLE}) and "
                  f"{hub_file} does not exist")


def _load_features(path: Path, prefix: str) -> tuple[dict | None, str]:
    if not path.is_file():
        return None, f"LPIPS weights file {path} does not exist"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file means "unavailable", with why
        return None, f"LPIPS weights file {path} unreadable ({exc.__class__.__name__}: {str(exc).splitlines()[0]})"
    if not isinstance(state, dict):
        return None, f"LPIPS weights file {path} holds no state dict"
    features = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    return features, str(path)


def _backbone_state(backbone: torch.nn.Module, features: dict) -> dict:
    # lpips keeps torchvision's layer indices inside its slices: slice<k>.<i>.weight <- features "<i>.weight"
    return {name: features[name.split(".", 1)[1]] for name in backbone.state_dict()}
