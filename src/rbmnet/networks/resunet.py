"""The paper's Modified ResUNet: four encoder and four decoder residual blocks, a bridge, U-Net skips.

The paper's one distinct trait: "instead of adding or concatenating a residual block's input to its
output, the output of the block's first BatchNorm2d is concatenated with the residual block's output."

Our reading, in `ConcatResidualBlock`, for a block of width w:

    a   = BN1(Conv3x3(x, stride s))          # the block's first BatchNorm2d output; w channels
    r   = BN2(Conv3x3(ReLU(a)))              # the residual branch continues from a
    out = ReLU(Conv1x1(cat(a, r)))           # 2w -> w channels

i.e. a post-activation residual block (conv-BN-ReLU-conv-BN) whose shortcut `x` is replaced by `a`,
joined by concatenation instead of addition, and fused back to the block's width by a 1x1 conv so
that widths follow `features_per_stage`. Why `a` and not BN applied to the raw input (the
pre-activation reading of ResUNet's units, whose first layer is a BN): a block that downsamples, and
every decoder block (whose input is upsampled features concatenated with the skip), changes the
channel count or the resolution, so BN(x) could not be concatenated with the output without yet
another projection. Under our reading `a` already has the output's shape: the first conv doubles as
the projection shortcut that ResUNet uses anyway (there a conv + BN on the input).

Downsampling is the stride 2 of that first conv (as in ResUNet, which has no pooling): encoder
block 0 keeps full resolution, encoder blocks 1-3 and the bridge halve it (4 halvings -> inputs must
be multiples of 16 with the default five widths). Decoder block i upsamples bilinearly (ResUNet's
upsampling; no parameters), concatenates the encoder block i output, and is a ConcatResidualBlock
of width features[i]. Dropout (plan `network.dropout`) is applied to every block's output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rbmnet.networks.blocks import check_divisible, init_he, output_head


class ConcatResidualBlock(nn.Module):
    """Residual block whose shortcut is its first BatchNorm2d output, concatenated (see module docstring)."""

    def __init__(self, in_channels: int, width: int, stride: int = 1, dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.fuse = nn.Conv2d(2 * width, width, kernel_size=1)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first_bn = self.bn1(self.conv1(x))
        # Not in-place: first_bn itself is concatenated below.
        residual = self.bn2(self.conv2(torch.relu(first_bn)))
        return self.dropout(torch.relu(self.fuse(torch.cat([first_bn, residual], dim=1))))


class ResUNet(nn.Module):
    def __init__(self, input_channels: int, features_per_stage: list[int], output_channels: int,
                 dropout: float = 0.0):
        super().__init__()
        widths = list(features_per_stage)
        self.total_downsampling = 2 ** (len(widths) - 1)
        self.encoder = nn.ModuleList()
        in_channels = input_channels
        for index, width in enumerate(widths[:-1]):
            self.encoder.append(ConcatResidualBlock(in_channels, width, 1 if index == 0 else 2, dropout))
            in_channels = width
        self.bridge = ConcatResidualBlock(widths[-2], widths[-1], 2, dropout)
        # decoder[0] works at the lowest resolution; decoder[-1] at full resolution.
        self.decoder = nn.ModuleList(
            ConcatResidualBlock(widths[i + 1] + widths[i], widths[i], 1, dropout)
            for i in reversed(range(len(widths) - 1)))
        self.head = output_head(widths[0], output_channels)
        init_he(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible(x, self.total_downsampling, "resunet")
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = self.bridge(x)
        for block, skip in zip(self.decoder, reversed(skips)):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)
