"""Augmentation of batches on the device, in torch: what augmentation.py does with batchgenerators on the CPU.

Same transforms, same plan numbers (AugmentationConfig), same per-sample probabilities and order:
    rotation and scaling    one affine warp (affine_grid + grid_sample; nearest for the target),
                            zeros outside the image
    mirror                  left-right flip
    gamma, brightness, contrast (about the mean, kept in the sample's range), Gaussian noise,
    Gaussian blur, then clipping to [0, 1]
The per-sample numbers are drawn from a CPU generator (`draw_augmentation`, a few dozen per batch) and
copied asynchronously from pinned memory (`to_device`); the per-pixel noise comes from a generator on
the device. Nothing here waits for the GPU, so a batch is made while the previous step still runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rbmnet.planning.plan import AugmentationConfig

GAMMA_EPSILON = 1e-7  # batchgenerators' epsilon in augment_gamma
BLUR_TRUNCATE = 4.0  # kernel radius in sigmas, as scipy.ndimage.gaussian_filter


@dataclass
class AugmentationDraw:
    """Per-sample random parameters of one batch (CPU tensors of shape (B,)); `*_on` says whether applied."""
    rotate_on: torch.Tensor
    angle: torch.Tensor  # radians
    scale_on: torch.Tensor
    scale: torch.Tensor  # > 1 samples a larger area: the content shrinks (batchgenerators' convention)
    mirror_on: torch.Tensor
    gamma_on: torch.Tensor
    gamma: torch.Tensor
    brightness_on: torch.Tensor
    brightness: torch.Tensor
    contrast_on: torch.Tensor
    contrast: torch.Tensor
    noise_on: torch.Tensor
    noise_std: torch.Tensor
    blur_on: torch.Tensor
    blur_sigma: torch.Tensor


def _uniform(generator: torch.Generator, count: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64)


def _around_one(generator: torch.Generator, count: int, low: float, high: float) -> torch.Tensor:
    """batchgenerators' gamma/contrast draw: half the time below 1, half above, when the range spans 1."""
    below = _uniform(generator, count, low, min(1.0, high))
    above = _uniform(generator, count, max(low, 1.0), high)
    pick_below = torch.rand(count, generator=generator, dtype=torch.float64) < 0.5
    return torch.where(pick_below & torch.tensor(low < 1.0), below, above)


def draw_augmentation(count: int, config: AugmentationConfig, generator: torch.Generator,
                      mirror_allowed: bool = True) -> AugmentationDraw:
    """Every per-sample parameter of a batch, drawn in a fixed order from `generator` (CPU).
    `mirror_allowed` False: the task's labels allow no left-right mirror (see tasks/)."""
    p = config.probability

    def happens(enabled: bool, probability: float = p) -> torch.Tensor:
        drawn = torch.rand(count, generator=generator) < probability  # always drawn: fixed stream order
        return drawn & enabled

    angle_limit = math.radians(config.rotation_degrees)
    scale_low, scale_high = config.scale_range
    noise_low, noise_high = config.noise_variance
    return AugmentationDraw(
        rotate_on=happens(angle_limit > 0), angle=_uniform(generator, count, -angle_limit, angle_limit),
        scale_on=happens((scale_low, scale_high) != (1.0, 1.0)),
        scale=_uniform(generator, count, scale_low, scale_high),
        mirror_on=happens(config.mirror and mirror_allowed, 0.5),
        gamma_on=happens(True), gamma=_around_one(generator, count, *config.gamma_range),
        brightness_on=happens(True), brightness=_uniform(generator, count, *config.brightness_range),
        contrast_on=happens(True), contrast=_around_one(generator, count, *config.contrast_range),
        # the plan's numbers are variances; batchgenerators draws the standard deviation between their roots
        noise_on=happens(True), noise_std=_uniform(generator, count, math.sqrt(noise_low), math.sqrt(noise_high)),
        blur_on=happens(True), blur_sigma=_uniform(generator, count, *config.blur_sigma),
    )


def to_device(tensor: torch.Tensor, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A small CPU tensor (per-sample parameters, row numbers) onto `like`'s device without a wait:
    a plain copy to a GPU synchronises the stream, so the CPU would stop making the next batch until
    the GPU finished the current step. Pinned memory allows an asynchronous copy."""
    tensor = tensor.to(dtype or tensor.dtype)  # on the CPU: what gets pinned is what gets copied
    if like.device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(like.device, non_blocking=True)


def affine_matrices(angle: torch.Tensor, scale: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 2, 3) affine_grid matrices: rotate by `angle` and scale by `scale` about the image centre.

    affine_grid works in coordinates normalised to [-1, 1] per axis; the rotation is made in pixel
    units (D = diag(W/2, H/2)), so that it stays a rotation on a non-square image: D^-1 s R D.
    """
    cos, sin = torch.cos(angle), torch.sin(angle)
    half = torch.tensor([width / 2.0, height / 2.0], dtype=angle.dtype)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
    linear = scale[:, None, None] * rotation * half[None, None, :] / half[None, :, None]
    return torch.cat([linear, torch.zeros(len(angle), 2, 1, dtype=angle.dtype)], dim=2)


def warp(image: torch.Tensor, target: torch.Tensor | None, draw: AugmentationDraw,
         label_flip: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rotation/scaling of the samples that draw it (zeros outside the image), then the mirror.

    `target` holds class indices; a mirrored target's indices go through `label_flip` (the task's
    left-right permutation: a numbered tooth takes its contralateral number), when given.
    """
    moved = (draw.rotate_on | draw.scale_on).nonzero().flatten()
    if len(moved):
        angle = torch.where(draw.rotate_on, draw.angle, torch.zeros_like(draw.angle))[moved]
        scale = torch.where(draw.scale_on, draw.scale, torch.ones_like(draw.scale))[moved]
        theta = to_device(affine_matrices(angle, scale, *image.shape[2:]), image, image.dtype)
        rows = to_device(moved, image)
        grid = F.affine_grid(theta, [len(moved), 1, *image.shape[2:]], align_corners=False)
        image = image.index_copy(0, rows, F.grid_sample(image[rows], grid, mode="bilinear",
                                                        padding_mode="zeros", align_corners=False))
        if target is not None:
            target = target.index_copy(0, rows, F.grid_sample(target[rows], grid, mode="nearest",
                                                              padding_mode="zeros", align_corners=False))
    mirror = to_device(draw.mirror_on, image)[:, None, None, None]
    image = torch.where(mirror, image.flip(3), image)
    if target is not None:
        mirrored = target.flip(3)
        if label_flip is not None:
            mirrored = label_flip[mirrored.long()].to(target.dtype)
        target = torch.where(mirror, mirrored, target)
    return image, target


def _per_sample(values: torch.Tensor, on: torch.Tensor, neutral: float, like: torch.Tensor) -> torch.Tensor:
    """(B,) parameters -> (B, 1, 1, 1) on the image's device, `neutral` where the transform is off."""
    chosen = torch.where(on, values, torch.full_like(values, neutral))
    return to_device(chosen, like, like.dtype)[:, None, None, None]


def gaussian_blur(image: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per sample (B,), reflected borders."""
    count = image.shape[0]
    radius = max(1, math.ceil(BLUR_TRUNCATE * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernels = torch.exp(-0.5 * (offsets[None, :] / sigma[:, None]) ** 2)
    kernels = to_device(kernels / kernels.sum(dim=1, keepdim=True), image, image.dtype)  # (B, K)
    # samples as channels of one image, one kernel per channel (groups = B)
    stacked = image.reshape(1, count, *image.shape[2:])
    stacked = F.conv2d(F.pad(stacked, (0, 0, radius, radius), mode="reflect"), kernels[:, None, :, None], groups=count)
    stacked = F.conv2d(F.pad(stacked, (radius, radius, 0, 0), mode="reflect"), kernels[:, None, None, :], groups=count)
    return stacked.reshape(image.shape)


def intensity(image: torch.Tensor, draw: AugmentationDraw, noise_generator: torch.Generator) -> torch.Tensor:
    """Gamma, brightness, contrast, noise, blur (batchgenerators' order), then clipping to [0, 1]."""
    low = image.amin(dim=(1, 2, 3), keepdim=True)
    spread = image.amax(dim=(1, 2, 3), keepdim=True) - low + GAMMA_EPSILON
    gamma = _per_sample(draw.gamma, draw.gamma_on, 1.0, image)
    image = ((image - low) / spread).clamp(min=0) ** gamma * spread + low
    image = image * _per_sample(draw.brightness, draw.brightness_on, 1.0, image)
    # contrast about the mean, then back inside the sample's own range (preserve_range=True)
    low, high = image.amin(dim=(1, 2, 3), keepdim=True), image.amax(dim=(1, 2, 3), keepdim=True)
    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    contrast = _per_sample(draw.contrast, draw.contrast_on, 1.0, image)
    image = torch.minimum(torch.maximum((image - mean) * contrast + mean, low), high)
    noise = torch.randn(image.shape, generator=noise_generator, device=image.device, dtype=image.dtype)
    image = image + _per_sample(draw.noise_std, draw.noise_on, 0.0, image) * noise
    blurred = draw.blur_on.nonzero().flatten()
    if len(blurred):
        rows = to_device(blurred, image)
        image = image.index_copy(0, rows, gaussian_blur(image[rows], draw.blur_sigma[blurred]))
    return image.clamp(0.0, 1.0)
