"""Mean teacher (Tarvainen & Valpola 2017), as used for semi-supervised medical segmentation (Perone &
Cohen-Adad 2018; Yu et al. 2019): a teacher whose weights are an exponential moving average of the
student's predicts each unlabeled image; the student, given a perturbed view of the same image, is
pulled towards that prediction (mean squared error between probabilities), with a weight that ramps
up while the teacher is still poor.

The student's view is the left-right mirror of the teacher's (where the task allows mirroring) plus
Gaussian noise, so the teacher's probabilities are mirrored and their channels permuted to match,
with the task's `channel_flip_order`: for numbered teeth a left tooth's channel becomes its right
counterpart's, exactly as mirrored test-time augmentation undoes it. The task is any object with
`activate(logits)` and `channel_flip_order` (tasks/base.py).
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

NOISE_STD = 0.05  # of the student's view, on radiographs normalised to [0, 1]


def sigmoid_rampup(step: int, rampup_steps: int) -> float:
    """exp(-5 (1 - t)^2), t = step / rampup_steps clipped to 1 (Laine & Aila 2017); 1 without a ramp."""
    if rampup_steps <= 0:
        return 1.0
    t = min(1.0, step / rampup_steps)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def bare(network: torch.nn.Module) -> torch.nn.Module:
    """The module under DDP / torch.compile wrappers (they share its parameters)."""
    network = getattr(network, "_orig_mod", network)
    return getattr(network, "module", network)


def inverse_order(order: list[int]) -> list[int]:
    inverse = [0] * len(order)
    for position, channel in enumerate(order):
        inverse[channel] = position
    return inverse


def student_view_target(teacher_probabilities: torch.Tensor, channel_flip_order: list[int] | None) -> torch.Tensor:
    """The teacher's probabilities as the mirrored view should predict them: `channel_flip_order` maps
    the mirrored view's channels back (channel c unmirrored = channel order[c] mirrored), so the mirrored
    view's channel order[c] is the unmirrored channel c, mirrored."""
    if channel_flip_order is None:
        return teacher_probabilities
    return teacher_probabilities.flip(3)[:, inverse_order(channel_flip_order)]


class MeanTeacher:
    name = "mean_teacher"

    def __init__(self, student: torch.nn.Module, task, weight: float, rampup_steps: int, decay: float,
                 make_input):
        """`make_input`: radiographs (B, 1, H, W) -> the network's input (model/sobel.network_input)."""
        self.teacher = copy.deepcopy(bare(student)).eval()
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        self.task, self.weight, self.rampup_steps, self.decay = task, weight, rampup_steps, decay
        self.make_input = make_input
        self.steps = 0

    def current_weight(self) -> float:
        return self.weight * sigmoid_rampup(self.steps, self.rampup_steps)

    def student_view(self, images: torch.Tensor) -> torch.Tensor:
        view = images.flip(3) if self.task.channel_flip_order is not None else images
        return (view + NOISE_STD * torch.randn_like(view)).clamp(0.0, 1.0)

    def consistency(self, student_logits: torch.Tensor, unlabeled: torch.Tensor) -> torch.Tensor:
        """The weighted consistency term: the student's logits on student_view(unlabeled) against the
        teacher's prediction of the unlabeled radiographs (B, 1, H, W) themselves."""
        self.teacher.to(unlabeled.device)
        with torch.no_grad():
            target = self.task.activate(self.teacher(self.make_input(unlabeled)).float())
            target = student_view_target(target, self.task.channel_flip_order)
        prediction = self.task.activate(student_logits.float())
        return self.current_weight() * F.mse_loss(prediction, target)

    @torch.no_grad()
    def update(self, student: torch.nn.Module) -> None:
        """After an optimizer step: teacher = decay x teacher + (1 - decay) x student; buffers that are
        not floating point (BatchNorm's batch counter) are copied. The decay is lower at the start
        (Tarvainen & Valpola), so that the teacher leaves the random initialisation quickly."""
        self.steps += 1
        decay = min(self.decay, 1.0 - 1.0 / (self.steps + 1))
        student_state = bare(student).state_dict()
        for name, value in self.teacher.state_dict().items():
            source = student_state[name].to(value.device)
            if value.dtype.is_floating_point:
                value.mul_(decay).add_(source, alpha=1.0 - decay)
            else:
                value.copy_(source)

    def state_dict(self) -> dict:
        return {"teacher": self.teacher.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.steps = int(state["steps"])
