"""Data augmentation with batchgenerators (0.25.5), configured by the plan's AugmentationConfig.

batchgenerators draws from numpy's global RNG and, for noise and blur, from Python's `random`;
`apply_transforms` seeds both from one number and restores them afterwards, so a batch is a pure
function of its seed and the caller's random state is left alone.

Its rotation multiplies a (H*W, 2) coordinate array by a 2x2 matrix; multi-threaded OpenBLAS takes
over ten times longer on that shape than one thread (measured: 290 ms vs 26 ms at 512x512 on two
cores), so the transforms run with BLAS limited to one thread (threadpoolctl, a batchgenerators
dependency). Batch workers run in parallel processes anyway.
"""
from __future__ import annotations

import contextlib
import math
import random

import numpy as np
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
from batchgenerators.transforms.color_transforms import (BrightnessMultiplicativeTransform, ClipValueRange,
                                                         ContrastAugmentationTransform, GammaTransform)
from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
from batchgenerators.transforms.spatial_transforms import SpatialTransform
from threadpoolctl import threadpool_limits

from rbmnet.planning.plan import AugmentationConfig

# Elastic deformation strength and smoothness in pixels (nnU-Net's 2D defaults); only used when
# config.elastic is on.
ELASTIC_ALPHA = (0.0, 200.0)
ELASTIC_SIGMA = (9.0, 13.0)
# Linear interpolation of the image: cubic splines cost several times more at 512x512 and overshoot.
IMAGE_INTERPOLATION_ORDER = 1


class LateralMirrorTransform(AbstractTransform):
    """Left-right mirror of half the samples; the label map's values go through `label_flip` with it.

    A mirrored panoramic shows the patient's sides swapped, so a numbered tooth must take its
    contralateral number (the task's flip lookup); for tooth vs background the lookup is the identity.
    Draws numpy's global RNG as batchgenerators' MirrorTransform does (one number for the per-sample
    probability, one for the axis), so binary batches are those it made.
    """

    def __init__(self, label_flip: np.ndarray | None, label_key: str = "seg"):
        self.label_flip, self.label_key = label_flip, label_key

    def __call__(self, **data_dict):
        data, label = data_dict["data"], data_dict.get(self.label_key)
        for sample in range(len(data)):
            np.random.uniform()  # MirrorTransform's per-sample probability draw (p = 1)
            if np.random.uniform() < 0.5:
                data[sample] = data[sample][:, :, ::-1]
                if label is not None:
                    label[sample] = self.label_flip[label[sample][:, :, ::-1].astype(np.intp)]
        return data_dict


def build_spatial_and_intensity_transforms(config: AugmentationConfig, patch_size: tuple[int, int],
                                           with_label: bool, label_flip: np.ndarray | None = None) -> Compose:
    """Compose for batches {"data": float32 (B, 1, H, W) in [0, 1], "seg": (B, 1, H, W) labels}.

    Each spatial and intensity transform happens to a sample with probability config.probability.
    Outside the rotated/scaled image the radiograph is 0 (black) and the label is background.
    The output image is clipped to [0, 1] because the pretext target must stay in the data range.
    with_label=False (pretext) builds transforms that look at the image only. With a label, the
    label map holds the task's class indices and `label_flip` says what a left-right mirror does to
    them (None: the task allows no left-right mirror, so there is none).
    """
    angle = math.radians(config.rotation_degrees)
    label_key = "seg" if with_label else "no_label"
    p = config.probability
    transforms = [
        SpatialTransform(
            patch_size=tuple(patch_size), patch_center_dist_from_border=None, random_crop=False,
            do_elastic_deform=config.elastic, alpha=ELASTIC_ALPHA, sigma=ELASTIC_SIGMA, p_el_per_sample=p,
            do_rotation=angle > 0, angle_x=(-angle, angle), p_rot_per_sample=p,
            do_scale=tuple(config.scale_range) != (1.0, 1.0), scale=tuple(config.scale_range), p_scale_per_sample=p,
            border_mode_data="constant", border_cval_data=0, order_data=IMAGE_INTERPOLATION_ORDER,
            border_mode_seg="constant", border_cval_seg=0, order_seg=0, label_key=label_key),
    ]
    if config.mirror and (not with_label or label_flip is not None):
        transforms.append(LateralMirrorTransform(label_flip, label_key=label_key))
    low_variance, high_variance = config.noise_variance
    transforms += [
        GammaTransform(tuple(config.gamma_range), invert_image=False, per_channel=False, retain_stats=False,
                       p_per_sample=p),
        BrightnessMultiplicativeTransform(tuple(config.brightness_range), per_channel=False, p_per_sample=p),
        ContrastAugmentationTransform(tuple(config.contrast_range), preserve_range=True, per_channel=False,
                                      p_per_sample=p),
        # batchgenerators calls it a variance but uses it as the standard deviation of the noise;
        # square roots keep the plan's numbers what their name says.
        GaussianNoiseTransform((math.sqrt(low_variance), math.sqrt(high_variance)), p_per_sample=p),
        GaussianBlurTransform(tuple(config.blur_sigma), different_sigma_per_channel=False, p_per_sample=p),
        ClipValueRange(0.0, 1.0),
    ]
    return Compose(transforms)


def apply_transforms(transforms: Compose, seed: int, image: np.ndarray,
                     label: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Run `transforms` on (B, 1, H, W) arrays with every RNG batchgenerators uses seeded by `seed`."""
    batch = {"data": np.ascontiguousarray(image, dtype=np.float32)}
    if label is not None:
        batch["seg"] = np.ascontiguousarray(label)
    with _seeded_global_rngs(seed), threadpool_limits(1, user_api="blas"):
        batch = transforms(**batch)
    return batch["data"].astype(np.float32, copy=False), batch.get("seg")


@contextlib.contextmanager
def _seeded_global_rngs(seed: int):
    numpy_state, python_state = np.random.get_state(), random.getstate()
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
