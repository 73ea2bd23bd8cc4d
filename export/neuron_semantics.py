"""Where another framework's spiking neurons step differently from the core's.

A network trained in snnTorch or SpikingJelly and imported from NIR (``export.nir_import``)
runs on the core by the core's rule. Where its framework's rule differs, the importer names
each difference and simulates the framework's own rule beside the core's, so the fixed
point is compared with what the network was trained as:

- the core and snnTorch's ``Leaky`` (subtract reset): ``v_t = lam * v_{t-1} + u_t - theta *
  s_{t-1}``, ``s_t = v_t > theta``;
- SpikingJelly's ``IFNode``/``LIFNode`` with ``v_reset=None``: ``v_t = lam * (v_{t-1} - theta *
  s_{t-1}) + u_t`` (the subtracted threshold decays with the leak) and ``s_t = v_t >= theta``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NeuronSemantics:
    """A framework's spiking neuron where it may differ from the core's (module docstring)."""
    framework: str
    reset_decays: bool = False          # v_t = lam * (v_{t-1} - theta * s_{t-1}) + u_t
    fires_at_threshold: bool = False    # s_t = v_t >= theta (the core: v_t > theta)

    def differences(self, leaks: list[float]) -> list[str]:
        """Each way this framework's neurons step differently from the core's, in words."""
        found = []
        if self.reset_decays and any(lam < 1.0 for lam in leaks):
            found.append(f"{self.framework} subtracts the threshold before the leak (v = lam * (v - theta * s) + u); "
                         "the core after it (v = lam * v + u - theta * s): a neuron that fired keeps "
                         "(1 - lam) * theta more")
        if self.fires_at_threshold:
            found.append(f"{self.framework} fires at v >= theta; the core at v > theta (a voltage exactly at "
                         "the threshold fires there, not on the core)")
        return found


SEMANTICS = {"core": NeuronSemantics("the core"), "snntorch": NeuronSemantics("snnTorch (Leaky, subtract reset)"),
             "spikingjelly": NeuronSemantics("SpikingJelly (v_reset=None)", reset_decays=True,
                                             fires_at_threshold=True)}
