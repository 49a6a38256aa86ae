"""LinkNet (Chaurasia & Culurciello 2017): a ResNet-18 encoder whose features are *added* to the decoder's.

Widths: `features_per_stage[1:]` are the encoder stages (default 64-128-256-512, exactly ResNet-18's),
`features_per_stage[0]` the final block's width (default 32, exactly LinkNet's).

One change from the original so that the network fits the plan's divisibility (2 ** (stages - 1),
16 by default): LinkNet's stem (7x7 conv stride 2 + max pool) downsamples 4x and its encoder 32x in
all; here the stem drops the max pool (2x, encoder 16x in all) and the last decoder block, rather
than the final block, restores full resolution. Decoder blocks are LinkNet's: 1x1 conv to a quarter
of the width, 3x3 transposed conv stride 2, 1x1 conv to the next width. Dropout (plan
`network.dropout`) acts on the deepest encoder features. Trained from scratch (no ImageNet weights).
"""
from __future__ import annotations

import torch
from torch import nn

from rbmnet.networks.blocks import ConvBnRelu, check_divisible, init_he, output_head, residual_stage

BLOCKS_PER_STAGE = 2  # ResNet-18


class LinkNetDecoderBlock(nn.Sequential):
    """1x1 reduce to in/4 -> 3x3 transposed conv, 2x up -> 1x1 expand to out; BN + ReLU after each."""

    def __init__(self, in_channels: int, out_channels: int):
        middle = max(in_channels // 4, 1)
        super().__init__(
            ConvBnRelu(in_channels, middle, kernel_size=1),
            nn.ConvTranspose2d(middle, middle, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(middle),
            nn.ReLU(inplace=True),
            ConvBnRelu(middle, out_channels, kernel_size=1),
        )


class LinkNet(nn.Module):
    def __init__(self, input_channels: int, features_per_stage: list[int], output_channels: int,
                 dropout: float = 0.0):
        super().__init__()
        final_width, *stage_widths = features_per_stage
        self.total_downsampling = 2 ** len(stage_widths)
        self.stem = ConvBnRelu(input_channels, stage_widths[0], kernel_size=7, stride=2)
        in_widths = [stage_widths[0]] + stage_widths[:-1]
        self.encoder = nn.ModuleList(
            residual_stage(i, o, BLOCKS_PER_STAGE, stride=1 if k == 0 else 2)
            for k, (i, o) in enumerate(zip(in_widths, stage_widths)))
        self.dropout = nn.Dropout2d(dropout)
        # Deepest first; each output matches the next-shallower encoder stage; the last keeps its width.
        self.decoder = nn.ModuleList(
            LinkNetDecoderBlock(o, i) for i, o in reversed(list(zip(in_widths, stage_widths))))
        self.final = nn.Sequential(ConvBnRelu(stage_widths[0], final_width), ConvBnRelu(final_width, final_width))
        self.head = output_head(final_width, output_channels)
        init_he(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible(x, self.total_downsampling, "linknet")
        x = self.stem(x)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = self.dropout(x)
        # LinkNet's links: decoder output + encoder features of the same resolution (none for the last block).
        for block, skip in zip(self.decoder[:-1], reversed(skips[:-1])):
            x = block(x) + skip
        x = self.decoder[-1](x)
        return self.head(self.final(x))
