"""Fine-tuning against the ANN's outputs (knowledge distillation, Hinton et al. 2015).

A converted SNN starts as an approximation of its ANN. Fine-tuned on hard labels alone it
fits the training set the ANN has already learned (training accuracy near 100 %) and can
drift away from the function that generalizes: at T = 8 on CIFAR-10 one STDB epoch raised
training accuracy to 91 % while validation fell 2.8 points below the conversion (RESULTS.md,
cifar10-vgg9-ann46). Distillation gives each training image the ANN's soft answer as the
target instead, so fine-tuning closes the conversion's error rather than re-learning labels:

    loss = (1 - w) * CE(z_s, y) + w * tau^2 * KL(softmax(z_a / tau) || softmax(z_s / tau))

with z_s the SNN's logits (its output potential over the steps so far), z_a the ANN's on the
same images (eval mode, no gradient), tau the temperature and w the weight; tau^2 keeps the
soft term's gradient on the scale of the hard one's as tau grows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from records.cli import require
from records.layout import ANN_STAGES
from trainer.checkpoint import Checkpoint, CheckpointError


@dataclass(frozen=True)
class Distillation:
    """The soft term's temperature tau > 0 and weight w in [0, 1] (the module docstring)."""
    temperature: float = 4.0
    weight: float = 0.9

    def __post_init__(self) -> None:
        require(math.isfinite(self.temperature) and self.temperature > 0, "distill_temperature", self.temperature,
                "a finite number > 0")
        require(math.isfinite(self.weight) and 0 <= self.weight <= 1, "distill_weight", self.weight,
                "a number in [0, 1]")

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor,
             label_smoothing: float = 0.0) -> torch.Tensor:
        """The combined loss of the module docstring, averaged over the batch."""
        tau = self.temperature
        soft = F.kl_div(F.log_softmax(student / tau, dim=1), F.log_softmax(teacher.float() / tau, dim=1),
                        reduction="batchmean", log_target=True)
        hard = F.cross_entropy(student, y, label_smoothing=label_smoothing)
        return (1 - self.weight) * hard + self.weight * tau * tau * soft


def check_teacher(teacher: Checkpoint, student: Checkpoint, path) -> None:
    """Refuse, naming ``path``, a teacher that is not an ANN of the student's inputs and classes."""
    if teacher.stage not in ANN_STAGES:
        raise CheckpointError(f"{path}: stage {teacher.stage!r}; the teacher is an ANN checkpoint "
                              f"({', '.join(ANN_STAGES)})")
    for name in ("input_shape", "num_classes"):
        mine, its = getattr(student.arch, name), getattr(teacher.arch, name)
        if mine != its:
            raise CheckpointError(f"{path}: the teacher's {name} is {its}, the network's is {mine}")
