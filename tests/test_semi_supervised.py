"""Semi-supervised segmentation (semisupervised/, plan: segmentation.semi_supervised): the mean teacher's
target for the mirrored student view (both tasks, the teeth flip permutation included), its EMA and
ramp-up, a real tiny run that never reads a hidden label and resumes its teacher, and the bad inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rbmnet.errors import RbmnetError
from rbmnet.model.checkpoint import FINAL, LATEST, load_checkpoint
from rbmnet.planning.plan import Plan, apply_overrides
from rbmnet.preprocessing.store import PreprocessedDataset
from rbmnet.semisupervised.mean_teacher import MeanTeacher, sigmoid_rampup, student_view_target
from rbmnet.tasks import build_task
from rbmnet.training.loop import COMPANION_KEY
from training_factory import make_tiny_dataset

FDI_JSON = {"labels": {"background": 0, **{f"tooth_{10 * q + p}": 10 * q + p for q in (1, 2, 3, 4)
                                          for p in range(1, 9)}}, "tooth_numbering": "FDI"}
BINARY_JSON = {"labels": {"background": 0, "tooth": 1}}


def task_for(name: str):
    plan = Plan("T", input_size=[16, 32])
    if name == "binary":
        return build_task(plan, BINARY_JSON)
    plan.segmentation.task, plan.segmentation.numbering_head = "teeth", name
    return build_task(plan, FDI_JSON)


@pytest.mark.parametrize("name", ["binary", "classes", "factorized"])
def test_the_teacher_target_is_what_the_mirrored_view_should_predict(name):
    """Whatever the teacher predicts for an image, the target given to the student's mirrored view
    decodes to the mirrored map with every tooth renumbered to its contralateral (binary: just mirrored)."""
    task = task_for(name)
    torch.manual_seed(0)
    probabilities = task.activate(3 * torch.randn(2, task.output_channels, 16, 32))
    index = task.to_index(probabilities)
    target = student_view_target(probabilities, task.channel_flip_order)
    expected = index[..., ::-1]
    if task.flip_lookup is not None:
        expected = task.flip_lookup[expected]
    assert np.array_equal(task.to_index(target), expected)
    if name != "binary":  # the permutation matters: a plain mirror would keep the wrong side's numbers
        assert not np.array_equal(task.to_index(probabilities.flip(3)), expected)


class Constant(torch.nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.full((2,), value))
        self.register_buffer("count", torch.tensor(0))

    def forward(self, x):
        return x[:, :1] * self.weight[0]


def test_the_teacher_is_a_moving_average_and_its_weight_ramps_up():
    student = Constant(1.0)
    teacher = MeanTeacher(student, task_for("binary"), weight=2.0, rampup_steps=10, decay=0.9,
                          make_input=lambda x: x)
    assert teacher.current_weight() == pytest.approx(2.0 * math.exp(-5.0))
    with torch.no_grad():
        student.weight.fill_(3.0)
        student.count.fill_(7)
    teacher.update(student)  # first step: decay min(0.9, 1 - 1/2) = 0.5
    assert torch.allclose(teacher.teacher.weight, torch.full((2,), 2.0)) and int(teacher.teacher.count) == 7
    teacher.update(student)  # then min(0.9, 1 - 1/3)
    assert torch.allclose(teacher.teacher.weight, torch.full((2,), 2.0 * (2 / 3) + 3.0 / 3))
    assert sigmoid_rampup(10, 10) == 1.0 and sigmoid_rampup(20, 10) == 1.0 and sigmoid_rampup(3, 0) == 1.0
    state = teacher.state_dict()
    again = MeanTeacher(Constant(0.0), task_for("binary"), 2.0, 10, 0.9, make_input=lambda x: x)
    again.load_state_dict(state)
    assert again.steps == 2 and torch.equal(again.teacher.weight, teacher.teacher.weight)
    assert not any(p.requires_grad for p in teacher.teacher.parameters())


TINY_SEMI = {"network.features_per_stage": [4, 8, 16, 32, 64], "segmentation.batch_size": 2,
             "segmentation.iterations_per_epoch": 2, "segmentation.epochs": 2, "segmentation.task": "binary",
             "segmentation.fraction": 0.3, "segmentation.semi_supervised": "mean_teacher"}


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    env = make_tiny_dataset(tmp_path, num_labeled=10, num_unlabeled=3, num_test=0, overrides=TINY_SEMI)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    torch.set_num_threads(1)
    return tmp_path


def train(overrides: dict | None = None, **options):
    from rbmnet.training.segmentation import run_segmentation
    from rbmnet.training.setup import load_stage_inputs

    inputs = load_stage_inputs("Tiny", "plans", overrides or {})
    return run_segmentation(inputs, "0", init="scratch", device_name="cpu", num_workers=0, **options)


def test_hidden_labels_are_never_read_and_the_teacher_resumes(tiny, monkeypatch):
    """A real mean-teacher run: the fold's training cases outside the fraction and the dataset's
    unlabeled images train through their images only; no label of theirs is ever read. Continued for
    a second epoch, the run carries on with the teacher it saved."""
    from rbmnet.io.atomic import read_json
    from rbmnet.training import batches

    read_labels, drawn_from = [], []
    original_label, original_images = PreprocessedDataset.label, batches.unlabeled_images
    monkeypatch.setattr(PreprocessedDataset, "label",
                        lambda self, name: read_labels.append(name) or original_label(self, name))
    monkeypatch.setattr(batches, "unlabeled_images", lambda source, names, *args: drawn_from.append(tuple(names))
                        or original_images(source, names, *args))
    folder = train({"segmentation.epochs": 1})
    assert folder.name == "seg__resunet__scratch__frac0.3__plans__mean-teacher"
    cases = read_json(folder / "fold_0" / "training_cases.json")
    hidden = set(cases["unlabeled_cases"])
    assert len(cases["cases"]) == 3  # 3 of the 10 labeled cases
    assert len(hidden) == (8 - 3) + 3  # fold 0 trains on 8: 5 held back, and the 3 unlabeled images
    assert read_labels and not set(read_labels) & hidden, "a hidden case's label was read"
    assert drawn_from and set(drawn_from[0]) == hidden
    assert not set(cases["validation_cases"]) & hidden
    first = load_checkpoint(folder / "fold_0" / LATEST)[COMPANION_KEY]
    assert first["steps"] == 2

    folder = train({"segmentation.epochs": 2}, resume_run=True)
    state = load_checkpoint(folder / "fold_0" / FINAL)[COMPANION_KEY]
    assert state["steps"] == 4  # a fresh teacher would have counted 2
    assert not set(read_labels) & hidden


def test_semi_supervision_without_images_to_use_is_a_one_line_error(tmp_path, monkeypatch):
    env = make_tiny_dataset(tmp_path, num_labeled=10, num_unlabeled=0, num_test=0,
                            overrides={**TINY_SEMI, "segmentation.fraction": 0.8})
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(RbmnetError, match="no images to use without labels") as error:
        train()
    assert "\n" not in str(error.value)
    assert not (tmp_path / "results" / "Tiny").exists() or not list((tmp_path / "results" / "Tiny").iterdir())


@pytest.mark.parametrize("key, value", [("segmentation.semi_supervised", "fixmatch"),
                                        ("segmentation.ema_decay", 1.0),
                                        ("segmentation.consistency_rampup", 1.5)])
def test_bad_semi_supervised_values_are_refused_when_the_plan_is_built(key, value):
    with pytest.raises(RbmnetError, match=key.replace(".", r"\.")):
        apply_overrides(Plan("T", input_size=[64, 64]), {key: value})


def test_numbered_teeth_train_with_a_mean_teacher(tiny):
    """The classes head end to end: the consistency term goes through the teeth task's activation and
    channel permutation in a real step (the target's correctness: the first test)."""
    folder = train({"segmentation.task": "teeth", "segmentation.numbering_head": "classes",
                    "segmentation.epochs": 1})
    assert folder.name == "seg__resunet__scratch__frac0.3__plans__teeth-classes__mean-teacher"
    checkpoint = load_checkpoint(folder / "fold_0" / FINAL)
    assert checkpoint[COMPANION_KEY]["steps"] == 2
    assert math.isfinite(checkpoint["log"][0]["train_loss"])
