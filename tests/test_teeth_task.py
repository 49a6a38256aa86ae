"""The numbered-teeth task: numberings and their flip permutations, both augmentation executors and
mirror TTA relabel the patient's sides, both heads' losses and decoding, bad labels named."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rbmnet.errors import RbmnetError
from rbmnet.model.forward import probabilities
from rbmnet.planning.plan import AugmentationConfig, Plan
from rbmnet.tasks import build_task, default_task_name
from rbmnet.data.numbering import NUMBERINGS
from rbmnet.tasks.teeth import ClassesTeethTask, FactorizedTeethTask
from rbmnet.augmentation.declaration import declare_augmentation
from rbmnet.training.augmentation import apply_transforms, transforms_from_declaration
from rbmnet.training.device_augmentation import draw_from_declaration, warp

FDI, UNIVERSAL = NUMBERINGS["FDI"], NUMBERINGS["universal"]
FDI_PERMANENT = [10 * q + p for q in (1, 2, 3, 4) for p in range(1, 9)]
FDI_JSON = {"labels": {"background": 0, **{f"tooth_{n}": n for n in FDI_PERMANENT}}, "tooth_numbering": "FDI"}
MIRROR_ONLY = AugmentationConfig(probability=0.0, rotation_degrees=0.0, scale_range=[1.0, 1.0], mirror=True)


def teeth_plan(head: str = "factorized", **augmentation) -> Plan:
    plan = Plan("T", input_size=[16, 32])
    plan.segmentation.task, plan.segmentation.numbering_head = "teeth", head
    for key, value in augmentation.items():
        setattr(plan.augmentation, key, value)
    return plan


# --- numberings -------------------------------------------------------------------------------

@pytest.mark.parametrize("numbering", [FDI, UNIVERSAL])
def test_contralateral_is_an_involution_that_swaps_quadrants(numbering):
    for number in numbering.numbers():
        other = numbering.contralateral(number)
        assert numbering.contralateral(other) == number and other != number
        (q, p), (q2, p2) = numbering.to_quadrant_position(number), numbering.to_quadrant_position(other)
        assert p == p2 and {q, q2} in ({1, 2}, {3, 4}, {5, 6}, {7, 8})
        assert numbering.from_quadrant_position(q, p) == number


def test_known_numbers_of_both_numberings():
    assert FDI.contralateral(16) == 26 and FDI.contralateral(47) == 37 and FDI.contralateral(55) == 65
    assert [UNIVERSAL.contralateral(n) for n in (1, 8, 17, 30)] == [16, 9, 32, 19]  # n <-> 17-n, n <-> 49-n
    # Universal 3 = upper right first molar = FDI 16; 19 = lower left first molar = FDI 36
    assert UNIVERSAL.to_quadrant_position(3) == FDI.to_quadrant_position(16)
    assert UNIVERSAL.to_quadrant_position(19) == FDI.to_quadrant_position(36)
    with pytest.raises(RbmnetError, match="not an FDI"):
        FDI.to_quadrant_position(19)


def test_flip_lookup_of_the_task_permutes_indices_to_contralateral_teeth():
    task = build_task(teeth_plan(), FDI_JSON)
    numbers = task.number_of_index
    flipped = task.flip_lookup
    assert np.array_equal(flipped[flipped], np.arange(len(flipped)))  # an involution
    assert flipped[0] == 0
    for index in range(1, len(numbers)):
        assert numbers[flipped[index]] == FDI.contralateral(int(numbers[index]))


def test_default_task_and_unknown_numbering():
    assert default_task_name(FDI_JSON) == "teeth"
    assert default_task_name({"labels": {"background": 0, "tooth": 1}, "tooth_numbering": None}) == "binary"
    unnumbered = {"labels": {"background": 0, "a": 1, "b": 2}, "tooth_numbering": None}
    task = build_task(teeth_plan("classes"), unnumbered)
    assert task.flip_lookup is None and task.channel_flip_order is None and "no left-right flips" in task.note
    with pytest.raises(RbmnetError, match="needs a tooth numbering"):
        build_task(teeth_plan("factorized"), unnumbered)
    with pytest.raises(RbmnetError, match="binary"):
        build_task(teeth_plan("classes"), {"labels": {"background": 0, "tooth": 1}, "tooth_numbering": None})


def test_label_values_not_in_dataset_json_are_named():
    task = build_task(teeth_plan(), FDI_JSON)
    label = np.zeros((4, 4), np.uint8)
    label[0, 0], label[1, 1] = 16, 99
    with pytest.raises(RbmnetError, match=r"case_7.png: label value\(s\) \[99\]"):
        task.encode(label, "case_7.png")


# --- flips in both augmentation executors -----------------------------------------------------

def asymmetric_label_map(task) -> np.ndarray:
    """(1, 1, 16, 32) index map: tooth 16 on the image's left, 11 and 41 on the right."""
    index = task.label_lookup
    label = np.zeros((16, 32), np.uint8)
    label[2:6, 2:9], label[2:6, 20:23], label[10:14, 24:30] = 16, 11, 41
    return index[label][None, None]


def mirrored_index_map(task, index: np.ndarray) -> np.ndarray:
    """The expected result of a left-right flip: mirrored, then relabelled for the patient's swapped sides."""
    return task.flip_lookup[np.flip(index, axis=-1)]


def test_worker_executor_mirrors_labels_to_contralateral_numbers():
    task = build_task(teeth_plan(), FDI_JSON)
    target = asymmetric_label_map(task)
    transforms = transforms_from_declaration(
        declare_augmentation(MIRROR_ONLY, mirror_allowed=task.flip_lookup is not None, with_label=True), (16, 32), task.flip_lookup)
    seen = set()
    for seed in range(12):
        image = np.linspace(0, 1, 16 * 32, dtype=np.float32).reshape(1, 1, 16, 32)
        out_image, out_label = apply_transforms(transforms, seed, image.copy(), target.copy())
        mirrored = not np.allclose(out_image, image)
        labels = task.index_to_labels(out_label.astype(np.uint8))[0, 0]
        expected = task.index_to_labels(mirrored_index_map(task, target)[0, 0] if mirrored else target[0, 0])
        assert np.array_equal(labels, expected)
        seen.add(mirrored)
        if mirrored:
            assert labels[3, 30 - 3] == 26 and labels[3, 31 - 21] == 21 and labels[12, 31 - 26] == 31
    assert seen == {True, False}


def test_naive_flips_keep_the_numbers():
    task = build_task(teeth_plan(laterality_swap=False), FDI_JSON)
    target = asymmetric_label_map(task)
    assert np.array_equal(mirrored_index_map(task, target), np.flip(target, axis=-1))


def test_device_executor_mirrors_labels_to_contralateral_numbers():
    task = build_task(teeth_plan(), FDI_JSON)
    target = torch.from_numpy(asymmetric_label_map(task)).float().repeat(8, 1, 1, 1)
    image = torch.linspace(0, 1, 16 * 32).reshape(1, 1, 16, 32).repeat(8, 1, 1, 1)
    draw = draw_from_declaration(8, 
        declare_augmentation(MIRROR_ONLY, mirror_allowed=True, with_label=True), torch.Generator().manual_seed(3))
    out_image, out_target = warp(image, target, draw, torch.from_numpy(task.flip_lookup.astype(np.int64)))
    flipped = mirrored_index_map(task, asymmetric_label_map(task))[0, 0]
    assert 0 < int(draw.mirror_on.sum()) < 8
    for row, mirrored in enumerate(draw.mirror_on.tolist()):
        expected = flipped if mirrored else asymmetric_label_map(task)[0, 0]
        assert np.array_equal(out_target[row, 0].numpy().astype(np.uint8), expected)
        assert torch.equal(out_image[row], image[row].flip(2) if mirrored else image[row])


def test_without_a_known_numbering_there_is_no_mirror():
    task = build_task(teeth_plan("classes"), {"labels": {"background": 0, "a": 1, "b": 2}, "tooth_numbering": None})
    draw = draw_from_declaration(64, 
        declare_augmentation(MIRROR_ONLY, mirror_allowed=task.flip_lookup is not None, with_label=True), torch.Generator().manual_seed(0))
    assert not draw.mirror_on.any()
    transforms = transforms_from_declaration(
        declare_augmentation(MIRROR_ONLY, mirror_allowed=task.flip_lookup is not None, with_label=True), (16, 32), task.flip_lookup)
    assert not any(type(t).__name__ == "LateralMirrorTransform" for t in transforms.transforms)


# --- heads: losses, decoding, mirror TTA --------------------------------------------------------

class LeftRightNet(torch.nn.Module):
    """Not symmetric: its output depends on where things are, so a mirrored pass differs."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, channels, 3, padding=1)
        self.ramp = torch.nn.Parameter(torch.linspace(-2, 2, 32).repeat(channels, 16, 1))

    def forward(self, x):
        return self.conv(x) + self.ramp * torch.arange(1, self.ramp.shape[0] + 1).view(-1, 1, 1)


@pytest.mark.parametrize("head", ["factorized", "classes"])
def test_mirror_tta_maps_the_mirrored_pass_back(head):
    torch.manual_seed(0)
    task = build_task(teeth_plan(head), FDI_JSON)
    network = LeftRightNet(task.output_channels).eval()
    images = torch.rand(2, 1, 16, 32)
    plain = probabilities(network, images, task)
    with_tta = probabilities(network, images, task, tta=True)
    mirrored_input = probabilities(network, images.flip(3), task)
    # TTA = mean of the plain pass and the mirrored pass mapped back (spatially and in its channels)
    back = mirrored_input.flip(3)[:, task.channel_flip_order]
    assert torch.allclose(with_tta, 0.5 * (plain + back), atol=1e-6)
    assert not torch.allclose(with_tta, plain)
    # TTA is its own mirror image: predicting the mirrored image with TTA gives the mirrored, relabelled map
    with_tta_mirrored = probabilities(network, images.flip(3), task, tta=True)
    assert torch.allclose(with_tta_mirrored.flip(3)[:, task.channel_flip_order], with_tta, atol=1e-6)
    numbers = task.index_to_labels(task.to_index(with_tta))
    mirrored_numbers = task.index_to_labels(task.to_index(with_tta_mirrored))
    relabel = np.vectorize(lambda n: FDI.contralateral(int(n)) if n else 0)
    agree = (np.flip(relabel(mirrored_numbers), axis=-1) == numbers).mean()
    assert agree > 0.99  # ties at exactly equal probabilities may fall either way


def test_factorized_decodes_quadrant_times_position():
    task = build_task(teeth_plan("factorized"), FDI_JSON)
    assert isinstance(task, FactorizedTeethTask) and task.output_channels == 13
    probs = np.zeros((13, 1, 3), np.float32)
    probs[0] = [[0.9, 0.9, 0.1]]  # tooth, tooth, background
    probs[1 + 2, 0, 0], probs[5 + 5, 0, 0] = 1, 1  # quadrant 3, position 6 -> 36
    probs[1 + 0, 0, 1], probs[5 + 0, 0, 1] = 1, 1  # quadrant 1, position 1 -> 11
    assert task.decode(probs).tolist() == [[36, 11, 0]]


@pytest.mark.parametrize("head", ["factorized", "classes"])
def test_losses_learn_a_numbered_map(head):
    torch.manual_seed(0)
    task = build_task(teeth_plan(head), FDI_JSON)
    target = torch.from_numpy(asymmetric_label_map(task)).float().repeat(2, 1, 1, 1)
    logits = torch.zeros(2, task.output_channels, 16, 32, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.3)
    first = task.loss(logits, target).item()
    for _ in range(60):
        optimizer.zero_grad()
        loss = task.loss(logits, target)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.3 * first
    decoded = task.index_to_labels(task.to_index(task.activate(logits.detach())))
    assert np.array_equal(decoded[0], task.index_to_labels(asymmetric_label_map(task))[0, 0])


def test_classes_head_has_one_channel_per_tooth_and_background():
    task = build_task(teeth_plan("classes"), FDI_JSON)
    assert isinstance(task, ClassesTeethTask) and task.output_channels == 33 and task.num_classes == 33
    order = task.channel_flip_order
    assert order[0] == 0 and sorted(order) == list(range(33))


def test_teeth_without_a_numbering_are_scored_without_a_wrong_side():
    import math

    from rbmnet.evaluation.numbering_metrics import teeth_case_metrics

    task = build_task(teeth_plan("classes"), {"labels": {"background": 0, "a": 1, "b": 2}, "tooth_numbering": None})
    reference = np.zeros((4, 6), np.uint8)
    reference[:, :3], reference[:, 3:] = 1, 2
    metrics = task.case_metrics(reference, reference)
    assert metrics["tooth_dice"] == 1.0 and metrics["identification_accuracy"] == 1.0
    assert metrics["wrong_side"] == 0 and math.isnan(metrics["wrong_side_rate"])
    assert teeth_case_metrics(reference, reference, None)["matched"] == 2
