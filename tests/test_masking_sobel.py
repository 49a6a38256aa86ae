"""Random Block Masking and the Sobel input channel."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from skimage.measure import label as connected_components

from rbmnet.planning.plan import MaskingConfig
from rbmnet.pretexts.random_blocks import block_mask, block_masks_torch, block_rectangles
from rbmnet.model.sobel import network_input, sobel_magnitude

SHAPE = (96, 128)
CONFIG = MaskingConfig()
# Block sides are rounded to whole pixels, so a block's area can miss 15 % by about half a row.
AREA_SLACK = 0.03


def test_masked_fraction_between_one_and_five_blocks_and_mostly_at_least_two():
    fractions = np.array([block_mask(SHAPE, CONFIG, np.random.default_rng(seed)).mean() for seed in range(400)])
    assert fractions.min() >= 0.15 * (1 - AREA_SLACK)
    assert fractions.max() <= 0.75 * (1 + AREA_SLACK)
    # overlap is avoided where there is room, so at least two full blocks are masked almost always
    assert np.mean(fractions >= 0.30 * (1 - AREA_SLACK)) > 0.9
    # and the larger block counts are reached, not only the minimum
    assert fractions.max() > 0.55


def test_blocks_count_size_aspect_and_placement():
    counts = set()
    for seed in range(300):
        blocks = block_rectangles(SHAPE, CONFIG, np.random.default_rng(seed))
        counts.add(len(blocks))
        assert CONFIG.min_blocks <= len(blocks) <= CONFIG.max_blocks
        for b in blocks:
            assert b.top >= 0 and b.left >= 0
            assert b.top + b.height <= SHAPE[0] and b.left + b.width <= SHAPE[1]
            area = b.height * b.width / (SHAPE[0] * SHAPE[1])
            assert abs(area - CONFIG.block_area_fraction) <= CONFIG.block_area_fraction * AREA_SLACK
            ratio = b.height / b.width
            assert 1 / CONFIG.max_aspect_ratio * 0.95 <= ratio <= CONFIG.max_aspect_ratio * 1.05
    assert counts == {2, 3, 4, 5}


def test_mask_is_union_of_blocks_and_components_match_separate_blocks():
    checked_separate = 0
    for seed in range(200):
        blocks = block_rectangles(SHAPE, CONFIG, np.random.default_rng(seed))
        mask = block_mask(SHAPE, CONFIG, np.random.default_rng(seed))
        union = np.zeros(SHAPE, bool)
        for b in blocks:
            union[b.top:b.top + b.height, b.left:b.left + b.width] = True
        np.testing.assert_array_equal(mask, union)
        components = connected_components(mask, connectivity=1).max()
        # touching or overlapping blocks merge into one component
        assert 1 <= components <= len(blocks)
        apart = all(_gap_between(a, b) for a, b in itertools.combinations(blocks, 2))
        if apart:
            assert components == len(blocks)
            checked_separate += 1
    assert checked_separate > 10


def _gap_between(a, b) -> bool:
    """True when the blocks neither overlap nor share an edge (so labeling keeps them apart)."""
    return (a.top + a.height < b.top or b.top + b.height < a.top
            or a.left + a.width < b.left or b.left + b.width < a.left)


def test_same_seed_same_mask_other_seed_other_mask():
    first = block_mask(SHAPE, CONFIG, np.random.default_rng(7))
    np.testing.assert_array_equal(first, block_mask(SHAPE, CONFIG, np.random.default_rng(7)))
    assert not np.array_equal(first, block_mask(SHAPE, CONFIG, np.random.default_rng(8)))
    assert first.dtype == bool and first.shape == SHAPE


def test_block_masks_torch_seeded_and_in_range():
    masks = block_masks_torch(6, *SHAPE, CONFIG, torch.Generator().manual_seed(3), "cpu")
    again = block_masks_torch(6, *SHAPE, CONFIG, torch.Generator().manual_seed(3), "cpu")
    other = block_masks_torch(6, *SHAPE, CONFIG, torch.Generator().manual_seed(4), "cpu")
    assert masks.shape == (6, 1, *SHAPE) and masks.dtype == torch.bool
    assert torch.equal(masks, again) and not torch.equal(masks, other)
    fractions = masks.float().mean(dim=(1, 2, 3))
    assert torch.all(fractions >= 0.15 * (1 - AREA_SLACK)) and torch.all(fractions <= 0.75 * (1 + AREA_SLACK))
    for mask in masks[:, 0].numpy():  # each mask is made of axis-aligned rectangles: 1..5 components
        assert 1 <= connected_components(mask, connectivity=1).max() <= CONFIG.max_blocks


def test_sobel_vertical_step_edge():
    image = torch.zeros(1, 1, 8, 10)
    image[..., 5:] = 1.0
    magnitude = sobel_magnitude(image)[0, 0]
    expected = 4 / math.sqrt(20)  # gx = 1 + 2 + 1 across the step, gy = 0
    torch.testing.assert_close(magnitude[:, 4:6], torch.full((8, 2), expected))
    assert torch.all(magnitude[:, :4] == 0) and torch.all(magnitude[:, 6:] == 0)


def test_sobel_constant_image_is_zero_everywhere_including_borders():
    assert torch.all(sobel_magnitude(torch.full((2, 1, 7, 9), 0.6)) == 0)


def test_sobel_scale_reaches_exactly_one_over_all_binary_patterns():
    patterns = torch.tensor(list(itertools.product([0.0, 1.0], repeat=9))).reshape(-1, 1, 3, 3)
    centre = sobel_magnitude(patterns)[:, 0, 1, 1]
    assert centre.max().item() == pytest.approx(1.0, abs=1e-6)
    random_image = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    magnitude = sobel_magnitude(random_image)
    assert magnitude.min() >= 0 and magnitude.max() <= 1 + 1e-6


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_sobel_keeps_dtype(dtype):
    image = torch.zeros(1, 1, 6, 6, dtype=dtype)
    image[..., 3:] = 1
    magnitude = sobel_magnitude(image)
    assert magnitude.dtype == dtype
    assert magnitude[0, 0, 0, 2].item() == pytest.approx(4 / math.sqrt(20), rel=1e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_sobel_and_masks_on_cuda():
    image = torch.rand(2, 1, 16, 16, device="cuda")
    torch.testing.assert_close(sobel_magnitude(image).cpu(), sobel_magnitude(image.cpu()))
    generator = torch.Generator(device="cuda").manual_seed(0)
    masks = block_masks_torch(2, 16, 16, CONFIG, generator, "cuda")
    assert masks.is_cuda and masks.shape == (2, 1, 16, 16)


def test_network_input_takes_edges_from_edges_of():
    flat = torch.full((2, 1, 8, 8), 0.5)
    step = torch.zeros(2, 1, 8, 8)
    step[..., 4:] = 1.0
    own = network_input(flat)
    assert own.shape == (2, 2, 8, 8)
    torch.testing.assert_close(own[:, :1], flat)
    assert torch.all(own[:, 1] == 0)
    guided = network_input(flat, edges_of=step)
    torch.testing.assert_close(guided[:, :1], flat)
    torch.testing.assert_close(guided[:, 1:], sobel_magnitude(step))
    assert guided[:, 1].max() > 0.5


# --- fine-grained (grid) masking --------------------------------------------------------------------


def test_grid_masking_hides_exactly_the_ratio_of_whole_cells():
    from types import SimpleNamespace

    from rbmnet.pretexts.grid import grid_mask

    config = SimpleNamespace(mask_ratio=0.6)
    mask = grid_mask((64, 96), config, 16, np.random.default_rng(0))
    cells = mask.reshape(4, 16, 6, 16).transpose(0, 2, 1, 3).reshape(24, 256)
    assert set(cells.mean(axis=1)) <= {0.0, 1.0}  # every 16 x 16 cell is wholly hidden or wholly seen
    assert cells.all(axis=1).sum() == round(0.6 * 24)
    again = grid_mask((64, 96), config, 16, np.random.default_rng(0))
    assert np.array_equal(mask, again) and not np.array_equal(mask, grid_mask((64, 96), config, 16,
                                                                              np.random.default_rng(1)))


def test_grid_masks_on_a_device_have_the_same_kind():
    from types import SimpleNamespace

    from rbmnet.pretexts import masking_scheme

    scheme = masking_scheme("grid")
    masks = scheme.masks_torch(3, 32, 48, SimpleNamespace(mask_ratio=0.75), 16, torch.Generator().manual_seed(2),
                               "cpu")
    assert masks.shape == (3, 1, 32, 48) and masks.dtype == torch.bool
    assert [int(m.sum()) // 256 for m in masks] == [round(0.75 * 6)] * 3
    assert scheme.loss_on_hidden_pixels and not masking_scheme("random_blocks").loss_on_hidden_pixels


def test_the_grid_loss_looks_only_at_hidden_pixels():
    from rbmnet.training.pretext import pretext_batch_loss

    class Echo(torch.nn.Module):  # "reconstructs" its masked input: perfect where seen, wrong where hidden
        def forward(self, x):
            return torch.logit(x[:, :1].clamp(1e-4, 1 - 1e-4))

    image = torch.full((1, 1, 8, 8), 0.5)
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[..., :4, :] = True
    batch = {"image": image, "mask": mask}
    hidden = pretext_batch_loss(Echo(), batch, fill_value=0.0, hidden_only=True)
    whole = pretext_batch_loss(Echo(), batch, fill_value=0.0)
    assert float(hidden) == pytest.approx(0.5, abs=1e-3) and float(whole) == pytest.approx(0.25, abs=1e-3)


@pytest.mark.parametrize("ratio", [0, 1, 1.5, -0.2])
def test_a_mask_ratio_outside_zero_one_is_refused_at_plan_time(ratio):
    from rbmnet.errors import RbmnetError
    from rbmnet.planning.plan import Plan, apply_overrides

    with pytest.raises(RbmnetError, match=r"masking.mask_ratio = .* must be in \(0, 1\)"):
        apply_overrides(Plan(dataset_name="x"), {"masking.mask_ratio": ratio, "masking.scheme": "grid"})
