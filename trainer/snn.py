"""The spiking network of the paper (Eq. 2-4) on the ANN's own modules.

Hidden neurons are the LIF of Eq. 2-3 with soft reset (trainer.lif: the equations, the
surrogate gradients and the backends that run them); in the BN-on-currents method a batch
norm of their input current comes first (``trainer.norms``). The output layer accumulates I_t over
all steps and never spikes (Eq. 4); its potential divided by the steps so far is the logit
(so the loss does not scale with T).

Input: signed rate coding of the normalised image x in [-1, 1] by the checkpoint's rule
(``records.encoding``): Poisson (the paper's: at every step a pixel emits sign(x) when a
fresh uniform number is below |x|) or integrate (deterministic, the low-latency recipe's).
Each neuron layer starts at ``v_init[k]`` times its threshold (0 by default; the
low-latency recipe's 1/2, ``trainer.qcfs``). Dropout masks are drawn once per mini-batch
and kept for all T steps. With ``weight_bits`` every conv and linear layer (and residual
block, its shortcut in its population's units) computes with its weights on the export's
grid (``trainer.weight_grid``): the float network is then the
core's, up to the rounding of thresholds and biases, and fine-tuning learns on that grid.

The synapses of all steps of a window run as one batched conv/matmul over steps x batch,
and only the neuron recurrence runs step by step (the "reference" backend instead runs
Algorithm 3 as written: time outer loop, layers inner, autograd per step).
Time runs in windows: state is carried (and detached) from one window to the next, which
is truncated BPTT when training and bounds memory when evaluating.
With ``channels_last`` the input spikes and dropout masks are laid out channels-last, so
every conv runs in that layout (oneDNN's fast one on CPUs: no reorder per call) and the
compiled neurons walk it in memory order and keep it (``trainer.memory_order``); the
numbers are the same up to the convolutions' summation order.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from records.encoding import check_rule, integrate_spikes, poisson_spikes
from records.sizing import USABLE_FRACTION, available_memory, require_memory
from trainer.layers import ArchError, AvgPool, Conv, Dropout, Flatten, Linear, ResBlock
from trainer.lif import NeuronState, Surrogate
from trainer.lif_backends import BACKENDS, neuron_backend
from trainer.models import ANN, ArchConfig, layer_shapes, neuron_count, neuron_layers
from trainer.norms import CurrentNorms
from trainer.weight_grid import MAX_BITS, MIN_BITS, block_on_grid, on_grid


# Bytes a training window holds per neuron, step and image until its backward: the current,
# the spikes and the spike ages saved for the surrogate, the next layer's input. Measured
# with ``trainer stdb`` on VGG9 for CIFAR-10 (231,434 neurons), batch 8, fp32: the peak
# resident memory grows by 2.44 MB per image-step from T = 32 to 96, 10.5 bytes per neuron;
# 12 leaves room for the allocator.
TRAIN_BYTES_PER_NEURON_STEP = 12


def training_window_memory(cfg: ArchConfig, steps: int, batch: int) -> int:
    """Bytes one training window of ``steps`` steps holds for backpropagation at ``batch``
    images: every neuron (``models.neuron_count``) at TRAIN_BYTES_PER_NEURON_STEP, and the
    input spikes as fp32."""
    return steps * batch * (neuron_count(cfg) * TRAIN_BYTES_PER_NEURON_STEP + math.prod(cfg.input_shape) * 4)


def timesteps_that_fit(cfg: ArchConfig, batch: int, device: str) -> int:
    """The most steps of full backpropagation at ``batch`` images that the usable part of
    the available memory holds (``records.sizing``; 0: not even one)."""
    return int(USABLE_FRACTION * available_memory(device) // training_window_memory(cfg, 1, batch))


def require_training_memory(cfg: ArchConfig, timesteps: int, batch: int, window: int | None, device: str,
                            where: str, fix: str) -> None:
    """Refuse, naming ``where``, training whose window would not fit in the device's memory."""
    steps = timesteps if window is None else min(int(window), timesteps)
    require_memory(training_window_memory(cfg, steps, batch), where,
                   f"backpropagation through {steps} steps of {batch} images of {cfg.name}", fix, device)


# Spikes (0 or 1, never -0) counted on their bits: torch's count_nonzero is several times
# faster on integers than on floats (bf16 7x on an AVX-512 EPYC).
_SAME_SIZE_INT = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}


def channels_last(spikes: torch.Tensor) -> torch.Tensor:
    """Spikes (steps, B, C, H, W) with each step's maps in NHWC memory order; others as they are."""
    if spikes.dim() != 5:
        return spikes
    return spikes.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


def count_spikes(spikes: torch.Tensor) -> int:
    """The number of spikes in a 0/1 tensor, exactly."""
    spikes = spikes.detach()
    return int(torch.count_nonzero(spikes.view(_SAME_SIZE_INT.get(spikes.dtype, spikes.dtype))))


def _block_pools(cfg: ArchConfig) -> dict[int, int]:
    """Residual block index -> the side of the average pools right before it (1: none),
    which export folds into the block (``export.quantize.fold_layers``)."""
    pools, pool = {}, 1
    for i, spec in enumerate(cfg.layers):
        if isinstance(spec, AvgPool):
            pool *= spec.kernel
        elif spec.weighted:
            if isinstance(spec, ResBlock):
                pools[i] = pool
            pool = 1
    return pools


class SNN(nn.Module):
    """The spiking view of an ANN: same modules and weights, plus thresholds and leak."""

    def __init__(self, ann: ANN, thresholds, leak: float = 1.0, surrogate: Surrogate | None = None,
                 backend: str = "auto", norms: CurrentNorms | None = None, v_init=None, encoding: str = "poisson",
                 weight_bits: int | None = None, channels_last: bool = False):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.ann = ann
        self.cfg: ArchConfig = ann.cfg
        self.neurons = neuron_layers(self.cfg)
        if len(thresholds) != len(self.neurons):
            raise ValueError(f"{len(thresholds)} thresholds for {len(self.neurons)} neuron layers")
        self.thresholds = [float(v) for v in thresholds]
        self.leak = float(leak)
        self.surrogate = surrogate or Surrogate()
        self.backend = backend
        self.norms = norms                    # batch norm on input currents (trainer.norms), None: none
        self.v_init = [0.0] * len(self.neurons) if v_init is None else [float(v) for v in v_init]
        if len(self.v_init) != len(self.neurons):
            raise ValueError(f"{len(self.v_init)} initial potentials for {len(self.neurons)} neuron layers")
        self.encoding = check_rule(encoding)
        if weight_bits is not None and not MIN_BITS <= weight_bits <= MAX_BITS:
            raise ValueError(f"weight bits must be in {MIN_BITS}..{MAX_BITS}, got {weight_bits}")
        self.weight_bits = weight_bits
        self.block_pools = _block_pools(self.cfg)
        self.channels_last = bool(channels_last)
        self.spike_counts: list[float] = []   # per neuron layer, summed over steps and batch, last run
        self.neuron_counts: list[int] = []    # neurons per neuron layer

    def _neuron(self, k, current, states, t0, lut, mask=None):
        """Run neuron layer k over the window's currents, updating states[k]; the spikes it
        hands on, through the dropout ``mask`` that follows it where one is given."""
        lif = neuron_backend(self.backend, current.device, self.surrogate.kind)
        if not getattr(lif, "reads_bf16", False):
            current = current.float()  # under bf16 autocast the synapses are bf16, the neurons fp32
        if states[k] is None:
            states[k] = NeuronState.zeros(current[0].detach().float(), self.v_init[k] * self.thresholds[k])
        args = (self.thresholds[k], self.leak, t0, self.surrogate, lut)
        counted = getattr(lif, "counted", None)
        if counted is not None:          # the compiled CPU kernels count and mask as they write the spikes
            spikes, states[k], fired = counted(current, states[k], *args, mask)
        else:
            spikes, states[k] = lif(current, states[k], *args)
            fired = count_spikes(spikes)
            if mask is not None:
                spikes = spikes * mask.to(spikes.dtype)     # bf16 spikes stay bf16
        self.spike_counts[k] += fired
        self.neuron_counts[k] = math.prod(current.shape[2:])
        return spikes

    def _synapses(self, module):
        """The conv or linear module as it computes: its own weights, or them on the grid."""
        if self.weight_bits is None:
            return module
        weight = on_grid(module.weight, self.weight_bits)
        if isinstance(module, nn.Conv2d):
            return lambda x: module._conv_forward(x, weight, module.bias)
        return lambda x: F.linear(x, weight, module.bias)

    def _block_synapses(self, i: int, module):
        """A residual block's conv1, conv2 and shortcut as they compute: its own modules, or
        on the grid (the shortcut in conv2's units, ``trainer.weight_grid.block_on_grid``)."""
        if self.weight_bits is None:
            return module.conv1, module.conv2, module.skip
        grid = block_on_grid(module, self.weight_bits, self.block_pools[i])
        conv = lambda c, w: lambda x: c._conv_forward(x, w, c.bias)   # noqa: E731
        return conv(module.conv1, grid.conv1), conv(module.conv2, grid.conv2), lambda x: grid.skip(module, x)

    def _propagate(self, spikes, states, masks, t0, lut, stop_at: int | None = None, start: int = 0):
        """Push input spikes (steps, B, ...) through the layers; returns the classifier's summed input.

        With ``stop_at=k`` it returns the input currents (steps, B, ...) of neuron layer k instead;
        with ``start=i`` the spikes enter at layer index i (what the layers before i would pass on).
        """
        steps = spikes.shape[0]
        # a conv's output as laid out (conv picks NCHW for a one-channel input, whatever its layout)
        merged = lambda module, p: self._laid_out(module(p.flatten(0, 1)).unflatten(0, (steps, -1)))  # noqa: E731
        last = len(self.cfg.layers) - 1
        k = sum(1 for i, _ in self.neurons if i < start)
        # masks are keyed by their dropout layer's index: the one right after layer i is masks.get(i + 1),
        # handed to the neurons of layer i, which apply it as they fire (``handed``), not the dropout layer
        handed = None
        for i, (spec, module) in enumerate(zip(self.cfg.layers, self.ann.layers)):
            if i < start:
                continue
            if isinstance(spec, (Conv, Linear)):
                current = merged(self._synapses(module), spikes)
                if i == last:
                    return current.float().sum(0)
                if self.norms is not None:
                    current = self.norms(k, current)
                if stop_at == k:
                    return current
                spikes, handed = self._neuron(k, current, states, t0, lut, masks.get(i + 1)), i + 1
                k += 1
            elif isinstance(spec, ResBlock):
                conv1, conv2, skip = self._block_synapses(i, module)
                current = merged(conv1, spikes)
                if stop_at == k:
                    return current
                inner = self._neuron(k, current, states, t0, lut)
                current = merged(conv2, inner) + merged(skip, spikes)
                if stop_at == k + 1:
                    return current
                spikes, handed = self._neuron(k + 1, current, states, t0, lut, masks.get(i + 1)), i + 1
                k += 2
            elif isinstance(spec, AvgPool):
                spikes = merged(lambda p: F.avg_pool2d(p, spec.kernel), spikes)
            elif isinstance(spec, Dropout):
                if i in masks and handed != i:
                    spikes = spikes * masks[i].to(spikes.dtype)            # bf16 spikes stay bf16
            elif isinstance(spec, Flatten):
                spikes = spikes.flatten(2)
            else:
                raise ArchError(f"{self.cfg.name}: the SNN has no form for layer {i} ({spec.kind})")
        raise AssertionError("architecture without classifier")  # validated by ArchConfig

    @classmethod
    def of_checkpoint(cls, ckpt, thresholds=None, **kwargs) -> "SNN":
        """The SNN a checkpoint defines (its weights, thresholds or the given ones, leak,
        surrogate, initial potentials, input rule and weight grid); ``kwargs`` as the constructor's."""
        params = ckpt.snn
        kwargs.setdefault("surrogate", Surrogate(**params.surrogate))
        kwargs.setdefault("leak", params.leak)
        kwargs.setdefault("weight_bits", params.weight_bits)
        return cls(ckpt.model(), thresholds or params.thresholds, v_init=params.v_init, encoding=params.encoding,
                   **kwargs)

    def encode(self, x: torch.Tensor, t0: int, steps: int, generator=None) -> torch.Tensor:
        """The input spikes (steps, *x.shape) of steps t0 .. t0 + steps - 1 by this SNN's rule."""
        if self.encoding == "integrate":
            return integrate_spikes(x, t0, steps)
        return poisson_spikes(x, steps, generator)

    def _laid_out(self, spikes: torch.Tensor) -> torch.Tensor:
        """A (steps, B, ...) tensor (spikes, currents, masks) in this SNN's memory layout (the module docstring)."""
        return channels_last(spikes) if self.channels_last else spikes

    def _dropout_masks(self, x: torch.Tensor, generator) -> dict[int, torch.Tensor]:
        """One mask per dropout layer for this mini-batch, fixed over all steps."""
        if not self.training:
            return {}
        masks = {}
        for i, (spec, shape) in enumerate(zip(self.cfg.layers, layer_shapes(self.cfg))):
            if isinstance(spec, Dropout) and spec.p > 0:
                keep = 1.0 - spec.p
                mask = (torch.rand((x.shape[0], *shape), generator=generator, device=x.device) < keep
                        ).to(x.dtype) / keep
                masks[i] = self._laid_out(mask[None])[0]
        return masks

    def begin(self, timesteps: int, window: int | None, device):
        """Start a run: reset the spike counters; (window length, empty neuron states, surrogate table)."""
        self.spike_counts = [0.0] * len(self.neurons)
        self.neuron_counts = [0] * len(self.neurons)
        window = timesteps if window is None else max(1, min(int(window), timesteps))
        states: list[NeuronState | None] = [None] * len(self.neurons)
        return window, states, self.surrogate.lut(timesteps + 1, device=device)

    def run(self, x: torch.Tensor, timesteps: int, *, window: int | None = None,
            generator: torch.Generator | None = None, input_spikes: torch.Tensor | None = None,
            shard=None):
        """Yield (steps so far, logits) after every window; state between windows is detached.

        The caller may backpropagate each window's logits (truncated BPTT, gradients summed).
        ``input_spikes`` (T, B, ...) replaces the Poisson encoding of ``x`` (e.g. to replay the
        exact trains a fixed-point simulation saw). ``shard(tensor, dim)`` (data-parallel
        training): random draws are made for the global batch ``x`` and this rank computes on
        its slice, so N processes see what one would.
        """
        shard = shard or (lambda t, dim=0: t)
        window, states, lut = self.begin(timesteps, window, x.device)
        masks = {i: shard(m) for i, m in self._dropout_masks(x, generator).items()}
        total = None
        for t0 in range(0, timesteps, window):
            steps = min(window, timesteps - t0)
            spikes = self._laid_out(shard(self.encode(x, t0, steps, generator), dim=1) if input_spikes is None
                                    else input_spikes[t0:t0 + steps].to(x.dtype))
            if self.backend == "reference":
                summed = sum(self._propagate(spikes[k:k + 1], states, masks, t0 + k, lut) for k in range(steps))
            else:
                summed = self._propagate(spikes, states, masks, t0, lut)
            total = summed if total is None else total.detach() + summed
            yield t0 + steps, total / (t0 + steps)
            states = [s.detached() if s is not None else None for s in states]

    def forward(self, x: torch.Tensor, timesteps: int, *, window: int | None = None,
                generator: torch.Generator | None = None, input_spikes: torch.Tensor | None = None) -> torch.Tensor:
        """Logits after all steps (full BPTT when window is None)."""
        logits = None
        for _, logits in self.run(x, timesteps, window=window, generator=generator, input_spikes=input_spikes):
            pass
        return logits

    @torch.no_grad()
    def layer_currents(self, spikes: torch.Tensor, layer: int, entry: int, states, t0: int, lut) -> torch.Tensor:
        """Input currents (steps, B, ...) of neuron layer ``layer`` for spikes entering at layer index ``entry``.

        ``states`` carries the neurons between the two (residual blocks) from window to window.
        """
        return self._propagate(spikes, states, {}, t0, lut, stop_at=layer, start=entry)

    @torch.no_grad()
    def fire(self, layer: int, current: torch.Tensor, states, t0: int, lut) -> torch.Tensor:
        """Spikes of neuron layer ``layer`` for its input currents (steps, B, ...)."""
        return self._neuron(layer, current, states, t0, lut)

    @torch.no_grad()
    def input_currents(self, x: torch.Tensor, timesteps: int, layer: int, *, window: int | None = None,
                       generator: torch.Generator | None = None):
        """Yield the input currents (steps, B, ...) of neuron layer ``layer`` window by window."""
        window, states, lut = self.begin(timesteps, window, x.device)
        for t0 in range(0, timesteps, window):
            steps = min(window, timesteps - t0)
            yield self._propagate(self._laid_out(self.encode(x, t0, steps, generator)), states, {}, t0, lut,
                                  stop_at=layer)

