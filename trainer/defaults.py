"""The chain's defaults per data set: the architecture, the two T (conversion's large T,
fine-tuning's reduced T), the fine-tuning surrogate, and the ANN recipes (the plain one,
the budgeted run's, and the low-latency and calibrated recipes' when one is the chain's own),
and which recipe a data set takes when none is asked for."""
from __future__ import annotations

import dataclasses

from records.timesteps import TimeSteps
from trainer.recipe import OptimConfig, fast_precision

DEFAULT_ARCH = {"digits": "vgg_tiny", "mnist": "vgg_tiny", "cifar10": "vgg5", "cifar100": "vgg11", "folder": "vgg5"}
# (large T for conversion, reduced T for STDB) per data set: the paper's VGG5 setting for CIFAR.
DEFAULT_T = {"digits": (200, 4), "mnist": (200, 6), "cifar10": (2500, 75), "cifar100": (2500, 125),
             "folder": (2500, 100)}
# The paper's reduced T of the deeper CIFAR-10 nets (Table 1), where it differs from VGG5's.
ARCH_T = {("cifar10", "vgg9"): (2500, 100), ("cifar10", "vgg16"): (2500, 100), ("cifar10", "resnet20"): (2500, 250)}
# Fine-tuning surrogate per data set. The paper's STDB surrogate (timing only) is the
# default where T is long as in the paper; at the few steps of the small data sets it
# degraded training in our runs (digits, T=4: 90.6 -> 91.1 %, train accuracy falling)
# while Appendix A's linear surrogate recovered the conversion loss (-> 93.1 %).
DEFAULT_SURROGATE = {"digits": "linear", "mnist": "linear", "cifar10": "stdb", "cifar100": "stdb",
                     "folder": "stdb"}


# The ANN recipe per data set. Plain SGD at lr 0.05 trains the small nets of digits and
# MNIST; the bias-free, batch-norm-free VGGs on CIFAR die with it in their first epoch
# (every ReLU silent, loss ln 10). lr 0.01 with one warm-up epoch learns: VGG5 on 2,000
# CIFAR-10 images, 4 epochs, 31.0 % test (Adam at 1e-3: 21.8 %; docs/method.md).
_SMALL_NETS = OptimConfig(epochs=30, lr=0.05, optimizer="sgd")
_CIFAR_NETS = OptimConfig(epochs=30, lr=0.01, optimizer="sgd", warmup_epochs=1.0)
ANN_RECIPES = {"digits": _SMALL_NETS, "mnist": _SMALL_NETS, "cifar10": _CIFAR_NETS, "cifar100": _CIFAR_NETS,
               "folder": _CIFAR_NETS}


def ann_recipe(dataset: str, **changes) -> OptimConfig:
    """The data set's ANN recipe with the given fields changed (None: keep the recipe's)."""
    return dataclasses.replace(ANN_RECIPES[dataset], **{k: v for k, v in changes.items() if v is not None})


# A budgeted run trains as many epochs as its deadline fits, up to these.
ANN_EPOCHS_CAP, SNN_EPOCHS_CAP = 200, 20


def _budgeted(opt: OptimConfig, device, epochs_cap: int, **changes) -> OptimConfig:
    """``opt`` as a budgeted run trains it: bf16 where ``device`` computes it natively
    (``fast_precision``), at least ``epochs_cap`` epochs for the deadline to cut, and ``changes``."""
    return dataclasses.replace(opt, precision=fast_precision(device), epochs=max(opt.epochs, epochs_cap), **changes)


def fast_recipe(dataset: str, device) -> OptimConfig:
    """The ANN recipe of a budgeted run (``python -m pipeline --budget-minutes``, on one GPU
    or the CPU): the data set's recipe at batch 256 with the learning rate scaled with the
    batch, a longer warm-up, gradients clipped at norm 5 (no batch norm guards these deep
    nets against a bad first step) and a one-cycle schedule, label smoothing 0.1, bf16
    autocast where ``device`` computes it natively (``fast_precision``) and channels-last;
    as many epochs as the budget fits (``train_ann``), at most 200."""
    base = ANN_RECIPES[dataset]
    return _budgeted(base, device, ANN_EPOCHS_CAP, batch_size=256, lr=base.lr * 256 / base.batch_size,
                     schedule="onecycle", warmup_epochs=max(2.0, 3 * base.warmup_epochs), grad_clip=5.0,
                     label_smoothing=0.1, channels_last=True)


def fast_snn_optim(dataset: str, base: OptimConfig, device) -> OptimConfig:
    """Fine-tuning in a budgeted run: bf16 synapses where native, a short warm-up, then a cosine
    laid over the training the stage's deadline fits (``trainer.fit.StepPlanner``), so the
    rate has annealed where the stage stops; Adam at 1e-4, the paper's code's rate, where the
    net is deep (the data sets of the CIFAR recipe)."""
    lr = 1e-4 if ANN_RECIPES[dataset] is _CIFAR_NETS else base.lr
    return _budgeted(base, device, SNN_EPOCHS_CAP, schedule="cosine", warmup_epochs=0.2, lr=lr)


# The calibrated recipe as the chain's own (``python -m pipeline --recipe calibrated``): the
# paper's T and conversion by threshold balancing, with what made it hold at depth on
# CIFAR-10 (RESULTS.md, cifar10-vgg9 at T = 100: 80.5 % balanced unscaled, 87.5 %
# calibrated, 88.9 % after STDB, its ANN 89.7 %): a batch-norm ReLU ANN with Cutout and label
# smoothing, no dropout; thresholds at the 99.9th percentile of the currents, not scaled
# (the paper's x 0.7 compounds over depth); the biases calibrated at T (trainer.calibrate);
# STDB by Adam at 1e-4 against the ANN's outputs, on the core's 8-bit weight grid, the
# linear surrogate.
CALIBRATED_CONVERSION = {"statistic": "percentile", "percentile": 99.9, "scaling_factor": 1.0,
                         "bias_calibration": 256}
CALIBRATED_CUTOUT = {"cifar10": 16, "cifar100": 16}     # half the 32-pixel side; none on the small digits


def calibrated_recipe(dataset: str, device=None) -> OptimConfig:
    """The calibrated recipe's ANN: the low-latency recipe's optimiser (SGD at 0.05, batch
    128, cosine) with label smoothing 0.1 and, on CIFAR, Cutout 16, the recipe of the
    VGG9 run (89.95 % in 64 epochs); with ``device`` (a budgeted run) as many epochs as fit."""
    return dataclasses.replace(low_latency_recipe(dataset, device), label_smoothing=0.1,
                               cutout=CALIBRATED_CUTOUT.get(dataset, 0))


def calibrated_snn_optim(base: OptimConfig, device=None) -> OptimConfig:
    """STDB in the calibrated recipe: the low-latency recipe's fine-tuning (Adam, batch 32,
    a short warm-up, cosine) at the paper's code's rate, 1e-4, the T = 100 run's."""
    return dataclasses.replace(low_latency_snn_optim(base, device), lr=1e-4)


# The low-latency recipe as the chain's own (``python -m pipeline --recipe low-latency``):
# (large T to check the conversion, reduced T). At T = 4 its VGG9 met the CIFAR-10 target
# on 2 CPU cores (RESULTS.md); 32 steps of a 4-level net are close to its ANN.
LOW_LATENCY_T = (32, 4)
LOW_LATENCY_CALIBRATION = 256         # training images its biases are calibrated at T on (trainer.calibrate)
RECIPES = ("paper", "low-latency", "calibrated")
# Each recipe's conversion settings (fields of trainer.chain.ConvertConfig; the others the paper's).
RECIPE_CONVERSION = {"paper": {}, "low-latency": {"bias_calibration": LOW_LATENCY_CALIBRATION},
                     "calibrated": CALIBRATED_CONVERSION}


def default_recipe(dataset: str) -> str:
    """The chain's recipe when none is asked for: the paper's where its T is short (digits,
    MNIST: it holds there); the calibrated one where the paper's T is long (CIFAR: 75 to
    250 steps), on any device, with a budget or not. There the paper's own settings
    collapse at depth (the 64-epoch VGG9 at T = 100: 37.80 % in fixed point against its
    ANN's 89.67 %), the calibrated recipe held on VGG9 at T = 100 (88.87 %) and on VGG5 at
    T = 75 as one budgeted CPU command (83.87 %, its ANN 84.00 %; RESULTS.md), and its
    calibrated conversion is close enough to its ANN that the few STDB steps a CPU budget
    affords at that T suffice; residual nets take it too (their blocks' biases are
    calibrated like any layer's: trainer.calibrate). The low-latency recipe (T = 4) is
    asked for by name."""
    return "calibrated" if DEFAULT_T[dataset][1] >= 64 else "paper"


def low_latency_recipe(dataset: str, device=None) -> OptimConfig:
    """The low-latency recipe's ANN (batch norm, QCFS activations, no dropout): SGD at 0.05,
    batch 128, a short warm-up and a cosine schedule, the recipe of RESULTS.md's CPU runs
    (VGG9: 85.85 % in 16 epochs). With ``device`` (a budgeted run): bf16 where native,
    channels-last, and as many epochs as the budget fits, at most 200."""
    base = dataclasses.replace(ANN_RECIPES[dataset], lr=0.05, batch_size=128, schedule="cosine",
                               warmup_epochs=0.3, weight_decay=5e-4)
    return base if device is None else _budgeted(base, device, ANN_EPOCHS_CAP, channels_last=True)


def low_latency_snn_optim(base: OptimConfig, device=None) -> OptimConfig:
    """Fine-tuning at the low-latency recipe's few steps: Adam at 3e-4, batch 32, a warm-up of
    5 % of an epoch (the CPU runs' recipe; one epoch on CIFAR-10 gained 5 to 10 points);
    with ``device`` (a budgeted run) bf16 where native, channels-last, a cosine laid over the
    training the deadline fits (``trainer.fit.StepPlanner``)."""
    tuned = dataclasses.replace(base, optimizer="adam", lr=3e-4, batch_size=32, warmup_epochs=0.05)
    return tuned if device is None else _budgeted(tuned, device, SNN_EPOCHS_CAP, channels_last=True,
                                                  schedule="cosine")


def default_timesteps(dataset: str, reduced: int | None = None, large: int | None = None,
                      sweep: tuple[int, ...] = (), arch: str | None = None, recipe: str = "paper") -> TimeSteps:
    t_large, t_small = (LOW_LATENCY_T if recipe == "low-latency"
                        else ARCH_T.get((dataset, arch or DEFAULT_ARCH[dataset]), DEFAULT_T[dataset]))
    return TimeSteps(reduced=reduced or t_small, large=large or t_large, sweep=sweep)
