"""Data augmentation with batchgenerators (0.25.5): the worker path's executor of the augmentation
declaration (augmentation/declaration.py), which says what happens with which numbers; this module
only translates each declared transform into its batchgenerators counterpart (BUILDERS).

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
import random

import numpy as np
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
from batchgenerators.transforms.color_transforms import (BrightnessMultiplicativeTransform, ClipValueRange,
                                                         ContrastAugmentationTransform, GammaTransform)
from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
from batchgenerators.transforms.spatial_transforms import SpatialTransform
from threadpoolctl import threadpool_limits

from rbmnet.augmentation.declaration import SPATIAL, AugmentationDeclaration, TransformSpec

# the declaration's interpolation names as batchgenerators' spline orders
INTERPOLATION_ORDER = {"nearest": 0, "linear": 1}


class LateralMirrorTransform(AbstractTransform):
    """Left-right mirror of a share `probability` of the samples (the declaration's: half); the label
    map's values go through `label_flip` with it.

    A mirrored panoramic shows the patient's sides swapped, so a numbered tooth must take its
    contralateral number (the task's flip lookup); for tooth vs background the lookup is the identity.
    Draws numpy's global RNG as batchgenerators' MirrorTransform does (one number for the per-sample
    probability, one for the axis), so binary batches are those it made.
    """

    def __init__(self, label_flip: np.ndarray | None, label_key: str = "seg", probability: float = 0.5):
        self.label_flip, self.label_key, self.probability = label_flip, label_key, probability

    def __call__(self, **data_dict):
        data, label = data_dict["data"], data_dict.get(self.label_key)
        for sample in range(len(data)):
            np.random.uniform()  # MirrorTransform's per-sample probability draw (p = 1)
            if np.random.uniform() < self.probability:
                data[sample] = data[sample][:, :, ::-1]
                if label is not None:
                    label[sample] = self.label_flip[label[sample][:, :, ::-1].astype(np.intp)]
        return data_dict


def _elastic(spec: TransformSpec) -> dict:
    return {"do_elastic_deform": True, "alpha": spec.params["alpha"], "sigma": spec.params["sigma"],
            "p_el_per_sample": spec.probability}


def _rotation(spec: TransformSpec) -> dict:
    return {"do_rotation": True, "angle_x": spec.params["angle"], "p_rot_per_sample": spec.probability}


def _scale(spec: TransformSpec) -> dict:
    return {"do_scale": True, "scale": spec.params["scale"], "p_scale_per_sample": spec.probability}


# The spatial transforms are arguments of one SpatialTransform (one warp of image and label map);
# the others are transforms of their own. Every name of declaration.ORDER is in exactly one dict.
SPATIAL_ARGUMENTS = {"elastic": _elastic, "rotation": _rotation, "scale": _scale}


def _mirror(spec: TransformSpec, label_key: str, label_flip: np.ndarray | None) -> AbstractTransform:
    if spec.params["label_permutation"] and label_flip is None:
        raise ValueError("a mirror of label maps needs the task's left-right lookup (label_flip)")
    return LateralMirrorTransform(label_flip, label_key=label_key, probability=spec.probability)


BUILDERS = {
    "mirror": _mirror,
    "gamma": lambda spec, *_: GammaTransform(spec.params["gamma"], invert_image=False, per_channel=False,
                                             retain_stats=False, p_per_sample=spec.probability),
    "brightness": lambda spec, *_: BrightnessMultiplicativeTransform(spec.params["factor"], per_channel=False,
                                                                     p_per_sample=spec.probability),
    "contrast": lambda spec, *_: ContrastAugmentationTransform(spec.params["factor"], preserve_range=True,
                                                               per_channel=False, p_per_sample=spec.probability),
    # batchgenerators calls its argument a variance but uses it as the noise's standard deviation
    "noise": lambda spec, *_: GaussianNoiseTransform(spec.params["std"], p_per_sample=spec.probability),
    "blur": lambda spec, *_: GaussianBlurTransform(spec.params["sigma"], different_sigma_per_channel=False,
                                                   p_per_sample=spec.probability),
    "clip": lambda spec, *_: ClipValueRange(spec.params["low"], spec.params["high"]),
}


def transforms_from_declaration(declaration: AugmentationDeclaration, patch_size: tuple[int, int],
                                label_flip: np.ndarray | None = None) -> Compose:
    """The declared transforms, in order, as one batchgenerators Compose.

    The SpatialTransform is always there (it places the patch) and rotates, scales or deforms a
    sample with each transform's declared probability; outside the moved image the radiograph is the
    declaration's outside value (0, black) and the label is background. `label_flip`: the task's
    left-right lookup of class indices, needed when the declared mirror permutes labels.
    """
    label_key = "seg" if declaration.with_label else "no_label"
    spatial = {}
    for spec in declaration.transforms:
        if spec.name in SPATIAL:
            spatial.update(SPATIAL_ARGUMENTS[spec.name](spec))
    transforms = [
        SpatialTransform(
            patch_size=tuple(patch_size), patch_center_dist_from_border=None, random_crop=False,
            **{"do_elastic_deform": False, "do_rotation": False, "do_scale": False, **spatial},
            border_mode_data="constant", border_cval_data=declaration.outside_value,
            order_data=INTERPOLATION_ORDER[declaration.image_interpolation],
            border_mode_seg="constant", border_cval_seg=declaration.outside_value,
            order_seg=INTERPOLATION_ORDER[declaration.label_interpolation], label_key=label_key),
    ]
    transforms += [BUILDERS[spec.name](spec, label_key, label_flip)
                   for spec in declaration.transforms if spec.name not in SPATIAL]
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
