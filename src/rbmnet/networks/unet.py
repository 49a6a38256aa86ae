"""Classic U-Net (Ronneberger et al. 2015) with BatchNorm, the paper's baseline.

Each stage is two 3x3 conv-BN-ReLU; 2x2 max pooling down; 2x2 transposed convolution up (halving
the width, as the original "up-convolution"), concatenated with the encoder features of the same
resolution. Widths follow `features_per_stage` (original: 64..1024; default here 32..512); the last
entry is the bottleneck, where dropout (plan `network.dropout`) sits, as in the original.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rbmnet.networks.blocks import ConvBnRelu, check_divisible, init_he, output_head


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(ConvBnRelu(in_channels, out_channels), ConvBnRelu(out_channels, out_channels))


class UNet(nn.Module):
    def __init__(self, input_channels: int, features_per_stage: list[int], output_channels: int,
                 dropout: float = 0.0):
        super().__init__()
        widths = list(features_per_stage)
        self.total_downsampling = 2 ** (len(widths) - 1)
        in_widths = [input_channels] + widths[:-2]
        self.encoder = nn.ModuleList(double_conv(i, o) for i, o in zip(in_widths, widths[:-1]))
        self.bottleneck = nn.Sequential(double_conv(widths[-2], widths[-1]), nn.Dropout2d(dropout))
        # Lowest resolution first. No bias: a BatchNorm follows the conv that reads these features.
        self.upsamplers = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], kernel_size=2, stride=2, bias=False)
            for i in reversed(range(len(widths) - 1)))
        self.decoder = nn.ModuleList(double_conv(2 * widths[i], widths[i]) for i in reversed(range(len(widths) - 1)))
        self.head = output_head(widths[0], output_channels)
        init_he(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible(x, self.total_downsampling, "unet")
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for upsample, stage, skip in zip(self.upsamplers, self.decoder, reversed(skips)):
            x = stage(torch.cat([upsample(x), skip], dim=1))
        return self.head(x)
