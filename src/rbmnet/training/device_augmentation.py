"""Augmentation of batches on the device, in torch: what augmentation.py does with batchgenerators on the CPU.

Both execute one declaration (augmentation/declaration.py): same transforms, same numbers, same
per-sample probabilities and order (`draw_from_declaration` reads the declaration and nothing else):
    rotation and scaling    one affine warp (affine_grid + grid_sample; nearest for the target),
                            zeros outside the image
    mirror                  left-right flip
    gamma, brightness, contrast (about the mean, kept in the sample's range), Gaussian noise,
    Gaussian blur, then clipping to [0, 1]
Elastic deformation is not done here (device_batches.choose_data_path sends such plans to the workers).
The per-sample numbers are drawn from a CPU generator (`draw_augmentation`, a few dozen per batch) and
copied asynchronously from pinned memory (`to_device`); the per-pixel noise comes from a generator on
the device. Nothing here waits for the GPU, so a batch is made while the previous step still runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rbmnet.augmentation.declaration import AugmentationDeclaration

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
    clip: tuple[float, float] | None = (0.0, 1.0)  # the image's range at the end (None: not clipped)


def _uniform(generator: torch.Generator, count: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64)


def _around_one(generator: torch.Generator, count: int, low: float, high: float) -> torch.Tensor:
    """batchgenerators' gamma/contrast draw: half the time below 1, half above, when the range spans 1."""
    below = _uniform(generator, count, low, min(1.0, high))
    above = _uniform(generator, count, max(low, 1.0), high)
    pick_below = torch.rand(count, generator=generator, dtype=torch.float64) < 0.5
    return torch.where(pick_below & torch.tensor(low < 1.0), below, above)


def draw_from_declaration(count: int, declaration: AugmentationDeclaration,
                          generator: torch.Generator) -> AugmentationDraw:
    """Every per-sample parameter of a batch, drawn in a fixed order from `generator` (CPU).

    Each transform's on/off numbers and parameters are drawn whether or not it is declared (fixed
    stream order); an undeclared transform is off, and its parameters are neutral.
    """
    if "elastic" in declaration:
        raise ValueError("elastic deformation is only done by the worker path (training/augmentation.py)")
    if (declaration.image_interpolation, declaration.label_interpolation, declaration.outside_value) != \
            ("linear", "nearest", 0.0):
        raise ValueError("the device warp interpolates images linearly, labels by nearest, with zeros outside")

    def happens(name: str) -> torch.Tensor:
        spec = declaration.get(name)
        drawn = torch.rand(count, generator=generator) < (spec.probability if spec else 0.0)
        return drawn & (spec is not None)

    def parameter(name: str, key: str, neutral: tuple[float, float]) -> tuple[float, float]:
        spec = declaration.get(name)
        return spec.params[key] if spec else neutral

    clip = declaration.get("clip")
    rotate_on = happens("rotation")
    angle = _uniform(generator, count, *parameter("rotation", "angle", (0.0, 0.0)))
    scale_on = happens("scale")
    scale = _uniform(generator, count, *parameter("scale", "scale", (1.0, 1.0)))
    mirror_on = happens("mirror")
    gamma_on = happens("gamma")
    gamma = _around_one(generator, count, *parameter("gamma", "gamma", (1.0, 1.0)))
    brightness_on = happens("brightness")
    brightness = _uniform(generator, count, *parameter("brightness", "factor", (1.0, 1.0)))
    contrast_on = happens("contrast")
    contrast = _around_one(generator, count, *parameter("contrast", "factor", (1.0, 1.0)))
    noise_on = happens("noise")
    noise_std = _uniform(generator, count, *parameter("noise", "std", (0.0, 0.0)))
    blur_on = happens("blur")
    blur_sigma = _uniform(generator, count, *parameter("blur", "sigma", (0.0, 0.0)))
    return AugmentationDraw(
        rotate_on=rotate_on, angle=angle, scale_on=scale_on, scale=scale, mirror_on=mirror_on,
        gamma_on=gamma_on, gamma=gamma, brightness_on=brightness_on, brightness=brightness,
        contrast_on=contrast_on, contrast=contrast, noise_on=noise_on, noise_std=noise_std,
        blur_on=blur_on, blur_sigma=blur_sigma,
        clip=(clip.params["low"], clip.params["high"]) if clip else None)


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
    return image if draw.clip is None else image.clamp(*draw.clip)
