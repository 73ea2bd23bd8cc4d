"""The soft-reset LIF Process (the paper's Eq. 2-4) in Lava's fixed-point terms."""
from __future__ import annotations

from export.lava.compat import import_lava

import_lava()

from lava.magma.core.process.ports.ports import InPort, OutPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.process.variable import Var  # noqa: E402

DU_INSTANT = 4095


class SoftResetLIF(AbstractProcess):
    """LIF neurons that subtract the threshold the step after a spike (Eq. 2).

    Loihi's fixed-point units (stock LIF): ``vth`` a 17-bit mantissa (compared as
    ``vth << 6``), ``du``/``dv`` 12-bit decays. ``spiking=False`` makes the output
    accumulator of Eq. 4: same update, never spikes, never resets; read ``v`` after a run.
    ``bias_mant`` (13-bit signed, per neuron or one for all) and ``bias_exp`` (0..7) are
    stock LIF's bias: ``bias_mant << bias_exp`` is added to ``v`` every step. ``v_init`` is
    the voltage before the first step. The neurons run from step ``bias_delay`` on
    (``steps_run`` counts the steps since the last reset) and hold their initial state
    before it: Lava delays each synapse by a step, so a core d synapses down the chain gets
    its first input at step d, and a bias or a leak of ``v_init`` that started before would
    run ahead of the layer-synchronous reference.
    """

    def __init__(self, *, shape: tuple[int, ...], vth: int, dv: int = 0, du: int = DU_INSTANT,
                 spiking: bool = True, bias_mant=0, bias_exp: int = 0, bias_delay: int = 0, v_init: int = 0,
                 name: str | None = None) -> None:
        super().__init__(shape=shape, vth=vth, dv=dv, du=du, spiking=spiking, name=name)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.u = Var(shape=shape, init=0)
        self.v = Var(shape=shape, init=int(v_init))
        self.spiked = Var(shape=shape, init=0)     # o_{t-1}: the spikes whose reset is still due
        self.vth = Var(shape=(1,), init=int(vth))
        self.dv = Var(shape=(1,), init=int(dv))
        self.du = Var(shape=(1,), init=int(du))
        self.bias_mant = Var(shape=shape, init=bias_mant)
        self.bias_exp = Var(shape=(1,), init=int(bias_exp))
        self.bias_delay = Var(shape=(1,), init=int(bias_delay))
        self.steps_run = Var(shape=(1,), init=0)
