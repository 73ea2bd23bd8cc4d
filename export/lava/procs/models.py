"""Bit-accurate (``fixed_pt``) ProcessModel of SoftResetLIF.

Written out after Lava's ``AbstractPyLifModelFixed`` (lava/proc/lif/models.py) rather
than calling export.fixedpoint, so that the tests compare two implementations. The
arithmetic runs in int64: Lava's Python LIF does not enforce the 16-bit input port,
and int32 would overflow on ``a << 6`` before the 24-bit wrap.
"""
from __future__ import annotations

from export.lava.compat import import_lava

import_lava()

import numpy as np  # noqa: E402
from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.model import PyLoihiProcessModel  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort, PyOutPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402

from export.lava.procs.process import SoftResetLIF  # noqa: E402

STATE_HALF_RANGE = 2 ** 23      # u, v are signed 24 bit
DECAY_SHIFT = 12                # du, dv: 4096 is unity
ACT_SHIFT = 6                   # synaptic input is MSB-aligned by << 6
VTH_SHIFT = 6                   # so is the threshold


def _decay(x: np.ndarray, decay_const: int) -> np.ndarray:
    """Multiply by (4096 - decay_const) / 4096, rounding toward zero (Loihi's decay)."""
    y = x * ((1 << DECAY_SHIFT) - decay_const)
    return np.sign(y) * (np.abs(y) >> DECAY_SHIFT)


@implements(proc=SoftResetLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "bit_accurate_loihi")
class PySoftResetLIFModelFixed(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=1)
    u: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    spiked: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=1)
    vth: int = LavaPyType(int, np.int32, precision=17)
    dv: int = LavaPyType(int, np.uint16, precision=12)
    du: int = LavaPyType(int, np.uint16, precision=12)
    bias_mant: np.ndarray = LavaPyType(np.ndarray, np.int16, precision=13)
    bias_exp: int = LavaPyType(int, np.int16, precision=3)
    bias_delay: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=32)
    steps_run: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=32)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.spiking = bool(proc_params["spiking"])

    def run_spk(self) -> None:
        a_in = self.a_in.recv().astype(np.int64)
        # current: decay with du + 1 (Loihi's ds_offset), add the input, one 24-bit wrap
        current = _decay(self.u.astype(np.int64), self.du + 1) + (a_in << ACT_SHIFT)
        wrapped = np.where(current > STATE_HALF_RANGE, current - 2 * STATE_HALF_RANGE, current)
        wrapped = np.where(wrapped <= -STATE_HALF_RANGE, current + 2 * STATE_HALF_RANGE, wrapped)
        self.u[:] = wrapped
        # voltage: leak, add the current and the bias, subtract the threshold of last step's spikes, clip
        vth = np.int64(self.vth) << VTH_SHIFT
        started = self.steps_run[0] >= self.bias_delay[0]
        self.steps_run[:] += 1
        if not started:         # before its first input the neuron holds its initial state (no leak, no bias)
            self.s_out.send(self.spiked)
            return
        bias = self.bias_mant.astype(np.int64) << np.int64(self.bias_exp)
        voltage = _decay(self.v.astype(np.int64), self.dv) + wrapped + bias - vth * self.spiked
        self.v[:] = np.clip(voltage, -(STATE_HALF_RANGE - 1), STATE_HALF_RANGE - 1)
        if self.spiking:
            self.spiked[:] = self.v > vth
        self.s_out.send(self.spiked)
