"""Segmentation networks by name: an explicit dict, and `build_network` that reads the plan's network section.

Every network maps (B, input_channels, H, W) to logits (B, output_channels, H, W), H and W multiples of
the network's total downsampling (2 ** (stages - 1)), and keeps its final 1x1 conv as `head`: pretext -> segmentation
transfer loads every weight but `head.*`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from rbmnet.errors import RbmnetError
from rbmnet.networks.linknet import LinkNet
from rbmnet.networks.pspnet import PSPNet
from rbmnet.networks.resunet import ResUNet
from rbmnet.networks.unet import UNet


@dataclass(frozen=True)
class Architecture:
    name: str
    # (input channels, features per stage, output channels, dropout) -> module: one signature for all
    builder: Callable[..., nn.Module]
    description: str  # one line, shown in --help
    # tensor-name prefixes of the encoder (down path and bottleneck): what segmentation.transfer "encoder" loads
    encoder_prefixes: tuple[str, ...] = ()


ARCHITECTURES: dict[str, Architecture] = {
    "resunet": Architecture("resunet", ResUNet,
                            "the paper's Modified ResUNet: residual blocks that concatenate their first "
                            "BatchNorm output, U-Net skips", ("encoder.", "bridge.")),
    "unet": Architecture("unet", UNet,
                         "classic U-Net: double 3x3 conv-BN-ReLU stages, max pooling, transposed-conv upsampling",
                         ("encoder.", "bottleneck.")),
    "linknet": Architecture("linknet", LinkNet,
                            "LinkNet: ResNet-18 encoder whose features are added to the decoder's",
                            ("stem.", "encoder.")),
    "pspnet": Architecture("pspnet", PSPNet,
                           "PSPNet: dilated ResNet encoder (output stride 8), pyramid pooling, bilinear upsampling",
                           ("stem.", "encoder.")),
}


def describe_architectures() -> str:
    """'name = what it is; ...' for --help texts."""
    return "; ".join(f"{name} = {arch.description}" for name, arch in ARCHITECTURES.items())


def build_network(config, output_channels: int, architecture: str | None = None, *,
                  input_channels: int) -> nn.Module:
    """The network the plan names (or `architecture`), freshly initialised, in train mode.

    `config` is the plan's network section, read for plain values only (architecture,
    features_per_stage, dropout): networks know nothing of plans. `input_channels` is not a plan key:
    callers pass model/sobel.py's NETWORK_INPUT_CHANNELS, the channels `network_input` makes."""
    name = architecture or config.architecture
    if name not in ARCHITECTURES:
        raise RbmnetError(f"unknown network architecture '{name}'; known: {', '.join(ARCHITECTURES)}")
    _check_config(config, input_channels, output_channels, name)
    return ARCHITECTURES[name].builder(input_channels, config.features_per_stage, output_channels, config.dropout)


def _check_config(config, input_channels: int, output_channels: int, name: str) -> None:
    widths = config.features_per_stage
    fewest = 3 if name == "pspnet" else 2  # pspnet: a stem width plus two undilated stages
    if not isinstance(widths, list) or len(widths) < fewest or not all(
            isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
        raise RbmnetError(f"network.features_per_stage must list at least {fewest} positive integers "
                          f"for '{name}', got {widths}")
    if not isinstance(input_channels, int) or input_channels < 1:
        raise RbmnetError(f"input channels must be a positive integer, got {input_channels}")
    if not isinstance(output_channels, int) or output_channels < 1:
        raise RbmnetError(f"output channels must be a positive integer, got {output_channels}")
    if not 0.0 <= config.dropout < 1.0:
        raise RbmnetError(f"network.dropout must lie in [0, 1), got {config.dropout}")
