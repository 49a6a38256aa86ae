"""The one definition of training-time augmentation: which transforms, in which order, with which numbers.

`declare_augmentation` reads the plan's augmentation section once and returns an
`AugmentationDeclaration`: an ordered tuple of `TransformSpec(name, probability, params)`. Its units
belong to no executor: angles in radians, noise as a standard deviation, (low, high) ranges and
per-sample probabilities. Whether a transform happens at all is decided here (no rotation at 0
degrees, no scaling for the range [1, 1], no mirror where the task's labels allow none), so the two
executors, batchgenerators in worker processes (training/augmentation.py) and torch on the device
(training/device_augmentation.py), only translate the declaration, transform by transform.

The plan section is duck-typed (any object with the fields read below): this folder sits below
planning/ and imports none of it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

# Elastic deformation strength and smoothness in pixels (nnU-Net's 2D defaults), when the plan asks for it.
ELASTIC_ALPHA = (0.0, 200.0)
ELASTIC_SIGMA = (9.0, 13.0)
# A left-right mirror happens to half the samples, whatever the plan's per-transform probability.
MIRROR_PROBABILITY = 0.5

SPATIAL = ("elastic", "rotation", "scale")  # one warp of image and label map together
INTENSITY = ("gamma", "brightness", "contrast", "noise", "blur")  # the image only
ORDER = (*SPATIAL, "mirror", *INTENSITY, "clip")  # every transform name, in the order they are applied


@dataclass(frozen=True)
class TransformSpec:
    """One transform: its name (one of ORDER), the chance that it happens to a sample, its parameters.

    params by name (ranges are (low, high) tuples, drawn per sample):
        elastic     alpha, sigma: deformation strength and smoothness in pixels
        rotation    angle: radians
        scale       scale: > 1 samples a larger area, so the content shrinks (batchgenerators' convention)
        mirror      axis: "width"; label_permutation: True when a label map goes through the task's
                    left-right lookup with the image
        gamma       gamma: the exponent
        brightness, contrast: factor
        noise       std: standard deviation of the additive Gaussian noise
        blur        sigma: pixels
        clip        low, high: the image's range afterwards (probability 1)
    """
    name: str
    probability: float
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.name not in ORDER:
            raise ValueError(f"unknown augmentation transform '{self.name}' (known: {', '.join(ORDER)})")


@dataclass(frozen=True)
class AugmentationDeclaration:
    """The transforms that happen, in order, and how the warp treats pixels (shared by both executors)."""
    transforms: tuple[TransformSpec, ...]
    with_label: bool  # batches carry a label map that moves with the image
    image_interpolation: str = "linear"  # cubic costs several times more at 512x512 and overshoots
    label_interpolation: str = "nearest"  # class indices, never blends
    outside_value: float = 0.0  # outside the warped image: black radiograph, background label

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.transforms)

    def get(self, name: str) -> TransformSpec | None:
        """The spec of transform `name`, or None when it does not happen."""
        if name not in ORDER:
            raise ValueError(f"unknown augmentation transform '{name}' (known: {', '.join(ORDER)})")
        return next((spec for spec in self.transforms if spec.name == name), None)

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None


def _pair(values) -> tuple[float, float]:
    low, high = values
    return float(low), float(high)


def declare_augmentation(config, mirror_allowed: bool, with_label: bool) -> AugmentationDeclaration:
    """The plan's augmentation section (rotation_degrees, scale_range, elastic, mirror, gamma_range,
    brightness_range, contrast_range, noise_variance, blur_sigma, probability) as a declaration.

    mirror_allowed: False when the task's labels allow no left-right mirror (no flip lookup; see
    tasks/); with_label: the batches carry a label map (segmentation) rather than the image alone.
    """
    p = float(config.probability)
    angle = math.radians(config.rotation_degrees)
    scale = _pair(config.scale_range)
    low_variance, high_variance = config.noise_variance
    specs = []
    if config.elastic:
        specs.append(TransformSpec("elastic", p, {"alpha": ELASTIC_ALPHA, "sigma": ELASTIC_SIGMA}))
    if angle > 0:
        specs.append(TransformSpec("rotation", p, {"angle": (-angle, angle)}))
    if scale != (1.0, 1.0):
        specs.append(TransformSpec("scale", p, {"scale": scale}))
    if config.mirror and mirror_allowed:
        specs.append(TransformSpec("mirror", MIRROR_PROBABILITY, {"axis": "width", "label_permutation": with_label}))
    specs += [
        TransformSpec("gamma", p, {"gamma": _pair(config.gamma_range)}),
        TransformSpec("brightness", p, {"factor": _pair(config.brightness_range)}),
        TransformSpec("contrast", p, {"factor": _pair(config.contrast_range)}),
        # the plan gives variances; the noise is drawn with a standard deviation between their roots
        TransformSpec("noise", p, {"std": (math.sqrt(low_variance), math.sqrt(high_variance))}),
        TransformSpec("blur", p, {"sigma": _pair(config.blur_sigma)}),
        TransformSpec("clip", 1.0, {"low": 0.0, "high": 1.0}),
    ]
    return AugmentationDeclaration(tuple(specs), with_label=with_label)
