"""Reconstruction quality of the pretext task: SSIM, FSIM, PSNR (piq) and LPIPS, over the whole image
and over the masked area only (see docs/metrics.md).

Images are 2D arrays in [0, 1] (the plan's normalisation range), compared with data_range=1 as
(1, 1, H, W) tensors. The prediction is clipped to [0, 1] first: piq rejects values outside the data
range, and a network output may overshoot slightly.

How each number is measured (also in MEASUREMENT, which reports copy):
- Downsampling: piq's SSIM by default (downsample=True, kept) and FSIM always average-pool both
  images by f = max(1, round(min(H, W) / 256)) before measuring; each result records its f as
  "downsample_factor" (1 means no downsampling). Images must be at least 11 x 11 (the SSIM window).
- PSNR: piq adds 1e-8 to the MSE, so identical images give 80 dB (a cap, not infinity).
- Masked area only, SSIM and FSIM: piq returns one number per image, so the masked area is measured
  as crops. The images and the mask are pooled by the same f (a pooled pixel is masked when at least
  half of it was); each connected component of the mask (one block, or overlapping blocks merged)
  is cropped by its bounding box, grown to at least 11 x 11 within the image; the metric of each
  crop (SSIM without further downsampling; FSIM's own rule never pools a crop, which is under 384 px)
  is averaged with weights = the component's masked pixel count. A box may hold a little unmasked
  context where merged blocks form an L shape.
- Masked PSNR: exact, piq's PSNR of the masked pixels alone (MSE over masked pixels, full resolution).
- Masked LPIPS: mean of LPIPS's spatial distance map (lpips spatial=True) over the masked pixels.
An empty mask gives NaN for the masked metrics (written as null in reports).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from rbmnet.compat.torchvision_cpu import import_piq

piq = import_piq()

WINDOW = 11  # piq's SSIM kernel size; the smallest crop measured
DATA_RANGE = 1.0
MEASUREMENT = {
    "data_range": DATA_RANGE,
    "ssim": "piq.ssim, kernel 11, sigma 1.5, downsample=True (pool by downsample_factor)",
    "fsim": "piq.fsim, chromatic=False (grayscale); piq always pools by downsample_factor",
    "psnr": "piq.psnr; identical images give 80 dB (piq's 1e-8 MSE floor)",
    "downsample_factor": "max(1, round(min(H, W) / 256)), piq's rule; 1 = not downsampled",
    "masked": "ssim/fsim: area-weighted mean over bounding-box crops (>= 11 px) of the mask's connected "
              "components on the pooled grid; psnr: MSE over masked pixels; lpips: spatial map mean over mask",
}
IMAGE_METRICS = ("ssim", "ssim_masked", "fsim", "fsim_masked", "psnr", "psnr_masked", "lpips", "lpips_masked")


def downsample_factor(height: int, width: int) -> int:
    """The average-pooling factor piq's SSIM (downsample=True) and FSIM apply to an image of this size."""
    return max(1, round(min(height, width) / 256))


def reconstruction_metrics(prediction: np.ndarray, target: np.ndarray, mask: np.ndarray,
                           lpips_metric=None) -> dict:
    """SSIM, FSIM, PSNR (and LPIPS when an LpipsMetric is given) over the whole image and the masked area."""
    prediction = np.clip(np.asarray(prediction, dtype=np.float32), 0.0, DATA_RANGE)
    target = np.clip(np.asarray(target, dtype=np.float32), 0.0, DATA_RANGE)
    mask = np.asarray(mask).astype(bool, copy=False)
    if not prediction.shape == target.shape == mask.shape or prediction.ndim != 2:
        raise ValueError(f"need equal 2D shapes, got {prediction.shape}, {target.shape}, {mask.shape}")
    if min(prediction.shape) < WINDOW:
        raise ValueError(f"images must be at least {WINDOW} x {WINDOW}, got {prediction.shape}")
    x, y = _tensor(prediction), _tensor(target)
    factor = downsample_factor(*prediction.shape)
    result = {
        "ssim": float(piq.ssim(x, y, data_range=DATA_RANGE, downsample=True)),
        "fsim": float(piq.fsim(x, y, data_range=DATA_RANGE, chromatic=False)),
        "psnr": float(piq.psnr(x, y, data_range=DATA_RANGE)),
        "ssim_masked": float("nan"), "fsim_masked": float("nan"), "psnr_masked": float("nan"),
        "downsample_factor": factor,
    }
    if mask.any():
        pooled_x, pooled_y, pooled_mask = _pool(x, y, mask, factor)
        result["ssim_masked"] = _masked_by_crops(
            lambda a, b: piq.ssim(a, b, data_range=DATA_RANGE, downsample=False), pooled_x, pooled_y, pooled_mask)
        result["fsim_masked"] = _masked_by_crops(
            lambda a, b: piq.fsim(a, b, data_range=DATA_RANGE, chromatic=False), pooled_x, pooled_y, pooled_mask)
        selected = torch.from_numpy(mask)
        result["psnr_masked"] = float(piq.psnr(x[0, 0][selected].view(1, 1, 1, -1),
                                               y[0, 0][selected].view(1, 1, 1, -1), data_range=DATA_RANGE))
    if lpips_metric is not None:
        result["lpips"] = float(lpips_metric(prediction, target))
        result["lpips_masked"] = float(lpips_metric.masked(prediction, target, mask)) if mask.any() else float("nan")
    return result


def summarize_reconstruction(per_image: list[dict], metrics=IMAGE_METRICS) -> dict:
    """Mean, median, population std (ddof=0) of each metric present, ignoring NaN; plus the settings."""
    if not per_image:
        raise ValueError("summarize_reconstruction needs at least one image")
    summary = {"num_images": len(per_image), "mean": {}, "median": {}, "std": {}}
    for metric in metrics:
        values = np.array([row[metric] for row in per_image if metric in row], dtype=float)
        values = values[~np.isnan(values)]
        if values.size == 0:
            continue
        summary["mean"][metric] = float(np.mean(values))
        summary["median"][metric] = float(np.median(values))
        summary["std"][metric] = float(np.std(values, ddof=0))
    summary["downsample_factors"] = sorted({int(row["downsample_factor"]) for row in per_image
                                            if "downsample_factor" in row})
    summary["measurement"] = MEASUREMENT
    return summary


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image))[None, None]


def _pool(x: torch.Tensor, y: torch.Tensor, mask: np.ndarray, factor: int):
    # The same pooling piq applies to whole images, so masked and whole-image numbers share one scale.
    if factor == 1:
        return x, y, mask
    pool = torch.nn.functional.avg_pool2d
    mask_fraction = pool(torch.from_numpy(mask.astype(np.float32))[None, None], factor)
    return pool(x, factor), pool(y, factor), mask_fraction[0, 0].numpy() >= 0.5


def _masked_by_crops(metric, x: torch.Tensor, y: torch.Tensor, mask: np.ndarray) -> float:
    components, _ = ndimage.label(mask)
    scores, weights = [], []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        rows, cols = (_grow(s, mask.shape[axis]) for axis, s in enumerate(box))
        scores.append(float(metric(x[..., rows, cols], y[..., rows, cols])))
        weights.append(int(np.count_nonzero(components[box] == index)))
    if not weights:
        return float("nan")  # the mask vanished when pooled (blocks thinner than half a pooled pixel)
    return float(np.average(scores, weights=weights))


def _grow(span: slice, size: int) -> slice:
    """Widen a slice symmetrically to at least WINDOW pixels, shifted to stay inside [0, size)."""
    start, stop = span.start, span.stop
    missing = WINDOW - (stop - start)
    if missing > 0:
        start -= missing // 2
        stop = start + WINDOW
        shift = max(0, -start) - max(0, stop - size)
        start, stop = start + shift, stop + shift
    return slice(start, stop)
