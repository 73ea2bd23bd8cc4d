"""Energy and delay of a simulation under an energy model (``records.energy_model``).

Energies are reported per image (mean over the samples), delay per inference, and
EDP = E x D (docs/energy.md). Synaptic events into the first core (caused by the
input's spikes) always count: they happen on the chip. The presets ship in
``hwsim/presets``: ``first_order`` (the paper's: energy = spikes), ``cmos45nm`` and
``loihi``, each with its numbers' source.
"""
from __future__ import annotations

import math
from pathlib import Path

from records.energy_model import EnergyModel, EnergyModelError, read_energy_model

PRESET_DIR = Path(__file__).with_name("presets")
DEFAULT_MODEL = "first_order"
ANN_REFERENCE_MODEL = "cmos45nm"     # used for SNN/ANN when the chosen model has no e_mac


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_energy_model(name_or_path: str | Path) -> EnergyModel:
    """A preset name (``first_order``, ``cmos45nm``, ``loihi``) or a path to a JSON file."""
    text = str(name_or_path)
    preset = PRESET_DIR / f"{text}.json"
    if preset.is_file() and "/" not in text and not text.endswith(".json"):
        return read_energy_model(preset, f"preset {text!r} ({preset})")
    path = Path(text)
    if not path.is_file():
        raise EnergyModelError(f"{text}: unknown energy model: neither a preset "
                               f"({', '.join(available_presets())}) nor an existing JSON file")
    return read_energy_model(path)


def layer_energy(model: EnergyModel, layer) -> float:
    """Total energy (over all samples and steps) of one core's ``LayerCounts``."""
    e_active = model.e_neuron_update if model.e_active_neuron_update is None else model.e_active_neuron_update
    spikes = layer.spikes if layer.spiking else 0
    return (model.e_spike * spikes + model.e_spike_hop * spikes
            + model.e_synaptic_event * layer.synaptic_events
            + e_active * layer.active_neuron_updates
            + model.e_neuron_update * (layer.neuron_updates - layer.active_neuron_updates))


def evaluate(model: EnergyModel, sim) -> dict:
    """Per-layer energies and totals of a ``SimResult``, per image."""
    n = max(sim.samples, 1)
    layers = [layer_energy(model, l) / n for l in sim.layers]
    input_e = (model.e_spike + model.e_spike_hop) * sim.input_spikes / n if model.include_input_spikes else 0.0
    static = model.e_time_step * sim.timesteps
    energy = sum(layers) + input_e + static
    delay = model.t_step * sim.timesteps
    return _finite(model, {"layers": layers, "input": input_e, "static": static, "energy": energy,
                           "energy_total": energy * sim.samples, "delay": delay, "edp": energy * delay})


def ann_energy(model: EnergyModel, macs: int | None) -> float | None:
    """Energy of one ANN inference of ``macs`` multiply-accumulates (None if either is unknown)."""
    return None if model.e_mac is None or macs is None else _finite(model, {"ann": model.e_mac * macs})["ann"]


def _finite(model: EnergyModel, values: dict) -> dict:
    """Values within float range: a model whose numbers overflow is the model file's fault."""
    for key, x in values.items():
        if not all(math.isfinite(v) for v in (x if isinstance(x, list) else [x])):
            raise EnergyModelError(f"{model.path or model.name}: the model's numbers are too large: a network's "
                                   f"{'energy' if key != 'delay' else 'delay'} overflows to infinity")
    return values
