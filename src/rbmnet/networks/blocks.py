"""Pieces the architectures share: conv-BN-ReLU, the ResNet basic block, the output head, He init."""
from __future__ import annotations

import torch
from torch import nn

from rbmnet.errors import RbmnetError


class ConvBnRelu(nn.Sequential):
    """Conv (no bias: the BatchNorm that follows would cancel it) -> BatchNorm2d -> ReLU; 'same' padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                      dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class BasicBlock(nn.Module):
    """ResNet-18/34 basic block: two 3x3 convs plus the input, projected (1x1 conv + BN) when its shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(residual + self.shortcut(x))


def residual_stage(in_channels: int, out_channels: int, num_blocks: int, stride: int = 1,
                   dilation: int = 1) -> nn.Sequential:
    """A ResNet stage: the first block changes width/resolution, the rest keep it."""
    blocks = [BasicBlock(in_channels, out_channels, stride, dilation)]
    blocks += [BasicBlock(out_channels, out_channels, 1, dilation) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


def output_head(in_channels: int, output_channels: int) -> nn.Conv2d:
    """The final 1x1 conv to logits; every network stores it as `head` so transfer can skip `head.*`."""
    return nn.Conv2d(in_channels, output_channels, kernel_size=1)


def init_he(model: nn.Module) -> nn.Module:
    """He (Kaiming) init for convs, unit/zero BatchNorm: the usual start for ReLU nets trained from scratch."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model


def check_divisible(x: torch.Tensor, multiple: int, network: str) -> None:
    """Skips only line up when the size halves exactly at every downsampling; say so instead of a shape error."""
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        raise RbmnetError(f"{network}: input size {height}x{width} is not a multiple of {multiple} "
                          f"(the network downsamples {multiple}x); choose an input_size divisible by {multiple}")
