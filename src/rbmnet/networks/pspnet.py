"""PSPNet (Zhao et al. 2017): a dilated ResNet encoder (output stride 8), pyramid pooling, a classifier.

Encoder: PSPNet's deep stem (three 3x3 convs, the first with stride 2, widths f0, f0, f1, then a
3x3 max pool stride 2: 4x down), then ResNet stages of basic blocks (ResNet-18 depth rather than
the original ResNet-50/101, to stay trainable on a CPU) with widths `features_per_stage[1:]`: the
first at stride 1, the second at stride 2 (8x down), the rest dilated (2, 4, ...) instead of strided,
so the features keep 1/8 of the input size.

Pyramid pooling: average-pool the features to 1x1, 2x2, 3x3 and 6x6 bins, 1x1 conv each to a quarter
of the width, upsample bilinearly back and concatenate with the features. The branch convs have a
bias and no BatchNorm (unlike the original): BN over a 1x1 bin fails with a batch of one. Classifier:
3x3 conv-BN-ReLU to a quarter of the width, dropout (plan `network.dropout`), the 1x1 `head`; the
logits are upsampled bilinearly to the input size, so any input size works. No auxiliary loss branch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rbmnet.networks.blocks import ConvBnRelu, init_he, output_head, residual_stage

BLOCKS_PER_STAGE = 2
PYRAMID_BINS = (1, 2, 3, 6)


class PyramidPooling(nn.Module):
    """Features concatenated with their pooled-and-upsampled summaries at several bin sizes."""

    def __init__(self, in_channels: int, bins: tuple[int, ...] = PYRAMID_BINS):
        super().__init__()
        branch_width = max(in_channels // len(bins), 1)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_channels, branch_width, 1), nn.ReLU(inplace=True))
            for b in bins)
        self.out_channels = in_channels + branch_width * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(branch(x), size=size, mode="bilinear", align_corners=False)
                  for branch in self.branches]
        return torch.cat([x, *pooled], dim=1)


class PSPNet(nn.Module):
    def __init__(self, input_channels: int, features_per_stage: list[int], output_channels: int,
                 dropout: float = 0.0):
        super().__init__()
        stem_width, *stage_widths = features_per_stage
        self.stem = nn.Sequential(
            ConvBnRelu(input_channels, stem_width, stride=2),
            ConvBnRelu(stem_width, stem_width),
            ConvBnRelu(stem_width, stage_widths[0]),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages, in_width = [], stage_widths[0]
        for k, width in enumerate(stage_widths):
            stride, dilation = (1, 1) if k == 0 else (2, 1) if k == 1 else (1, 2 ** (k - 1))
            stages.append(residual_stage(in_width, width, BLOCKS_PER_STAGE, stride, dilation))
            in_width = width
        self.encoder = nn.Sequential(*stages)
        self.pyramid = PyramidPooling(in_width)
        classifier_width = max(in_width // 4, 1)
        self.classifier = nn.Sequential(ConvBnRelu(self.pyramid.out_channels, classifier_width),
                                        nn.Dropout2d(dropout))
        self.head = output_head(classifier_width, output_channels)
        init_he(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        logits = self.head(self.classifier(self.pyramid(self.encoder(self.stem(x)))))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
