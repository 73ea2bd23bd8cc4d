"""The hybrid's two baselines as training recipes on the trainer's one SNN loop
(``train.train_snn``); each writes a checkpoint of the common format, exported and
simulated like the hybrid's (``python -m pipeline --methods``; docs/method.md).

``spikebp``: Lee, Sarwar, Panda, Srinivasan, Roy, *Enabling Spike-based Backpropagation for
Training Deep Neural Network Architectures*, Frontiers in Neuroscience 14:119 (2020). Its
approximate derivative is the surrogate "spikebp" of ``trainer.lif``; the rest of the
recipe follows the authors' public code (github.com/chan8972/Enabling_Spikebased_Backpropagation,
``src/cifar10_VGG9.py``): weights drawn from N(0, 2 / fan-in) (the trainer's own He-normal
init), every threshold 1, leak 0.99, dropout masks fixed over the steps, the squared error
of the output against the one-hot label (``MSELoss(size_average=False)``), plain SGD without
momentum at lr 0.0033 on that loss summed over a batch of 16 (= 0.0528 on the batch mean),
weight decay 5e-4, the rate x 0.2 at epochs 70, 100 and 125 of 150 (schedule "step0.2").
Kept from the target instead of the code: soft reset (Lava's core here resets by
subtraction; the code resets to zero) and average pooling without spiking pool neurons.

``bncurrent``: Ledinauskas, Ruseckas, Jursenas, Buracas, *Training Deep Spiking Neural
Networks* (arXiv:2006.04436, 2020): surrogate-gradient BPTT from scratch with batch norm
on each hidden layer's input current (``trainer.norms``; statistics over batch and time),
folded into per-channel weights and a neuron bias for deployment. The paper's remedy for
exploding and vanishing gradients is to tune the surrogate's height; here the triangle
surrogate (``linear``) with the height ``BN_SURROGATE_ALPHA`` (a sweep on digits, T = 4,
docs/method.md), thresholds 1, Adam at 1e-3 with a cosine schedule, cross-entropy.
"""
from __future__ import annotations

from records.layout import BASELINE_STAGES, METHOD_STAGES
from trainer.lif import Surrogate
from trainer.recipe import OptimConfig, SNNTrainConfig

METHODS = tuple(METHOD_STAGES)         # "qcfs" is a recipe of the chain (trainer.chain.low_latency), not a baseline
BASELINES = tuple(BASELINE_STAGES)     # each has a recipe here (baseline_config)
SPIKEBP_LEAK = 0.99
BN_SURROGATE_ALPHA = 0.5


def spikebp_config(epochs: int) -> SNNTrainConfig:
    """Lee 2020's recipe (the module docstring) for ``epochs`` epochs."""
    return SNNTrainConfig(OptimConfig(epochs=epochs, batch_size=16, optimizer="sgd", lr=0.0033 * 16, momentum=0.0,
                                      weight_decay=5e-4, schedule="step0.2"),
                          surrogate=Surrogate("spikebp"), leak=SPIKEBP_LEAK, loss="mse", rollback_drop=float("inf"))


def bncurrent_config(epochs: int, leak: float | None = None) -> SNNTrainConfig:
    """Batch norm on input currents (the module docstring) for ``epochs`` epochs."""
    return SNNTrainConfig(OptimConfig(epochs=epochs, batch_size=64, optimizer="adam", lr=1e-3, weight_decay=0.0,
                                      schedule="cosine"),
                          surrogate=Surrogate("linear", BN_SURROGATE_ALPHA), leak=leak, current_norm=True)


def baseline_config(method: str, epochs: int, leak: float | None = None) -> SNNTrainConfig:
    if method == "spikebp":
        return spikebp_config(epochs)
    if method == "bncurrent":
        return bncurrent_config(epochs, leak)
    raise ValueError(f"unknown baseline {method!r}; choose one of {', '.join(BASELINES)}")

