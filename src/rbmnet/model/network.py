"""A model's network rebuilt from its plan: the architecture the plan names, fed the network input
that model/sobel.py makes (radiograph + Sobel edges)."""
from __future__ import annotations

from torch import nn

from rbmnet.model.sobel import NETWORK_INPUT_CHANNELS
from rbmnet.networks import build_network


def build_model_network(network_section, output_channels: int, architecture: str | None = None) -> nn.Module:
    """Freshly initialised network for the plan's network section and a head of `output_channels`."""
    return build_network(network_section, output_channels, architecture, input_channels=NETWORK_INPUT_CHANNELS)
