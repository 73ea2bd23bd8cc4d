"""Energy and delay models: the paper's first-order model and models set from a file.

A model is a JSON file (``hwsim/presets/*.json`` ship with the package, each with its
numbers and its source; a user passes a path to their own file with the same fields):

==========================  =============================================================
``e_spike``                 energy per spike of a neuron (first-order model: 1 unit)
``e_synaptic_event``        per synaptic operation (a spike times its fan-out)
``e_neuron_update``         per neuron update (one neuron, one step), or per *inactive*
                            update when ``e_active_neuron_update`` is set
``e_active_neuron_update``  per update of a neuron with non-zero synaptic input (or null)
``e_spike_hop``             per spike routed to the next core (one hop per spike)
``e_time_step``             per time step and image (static / clocking energy)
``t_step``                  delay of one time step (delay D = T x t_step)
``include_input_spikes``    count the input's spikes with e_spike / e_spike_hop too
``e_mac``                   per multiply-accumulate of the ANN baseline (or null)
==========================  =============================================================

plus ``format``, ``version``, ``name``, ``description``, ``source``, ``energy_unit``,
``delay_unit``, ``e_mac_source``. Synaptic events into the first core (caused by the
input's spikes) always count: they happen on the chip.

Energies are reported per image (mean over the samples), delay per inference, and
EDP = E x D (SPEC section 4).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

FORMAT = "hybrid-snn-energy-model"
VERSION = 1
PRESET_DIR = Path(__file__).with_name("presets")
DEFAULT_MODEL = "first_order"
ANN_REFERENCE_MODEL = "cmos45nm"     # used for SNN/ANN when the chosen model has no e_mac

_NUMBERS = ("e_spike", "e_synaptic_event", "e_neuron_update", "e_spike_hop", "e_time_step", "t_step")
_OPTIONAL_NUMBERS = ("e_active_neuron_update", "e_mac")
_STRINGS = ("name", "description", "source", "energy_unit", "delay_unit")
FIELDS = ("format", "version") + _STRINGS + _NUMBERS + _OPTIONAL_NUMBERS + ("include_input_spikes", "e_mac_source")


class EnergyModelError(ValueError):
    """An energy model that is unknown, or a file with missing, unknown or invalid fields."""


@dataclass(frozen=True)
class EnergyModel:
    name: str
    description: str
    source: str
    energy_unit: str
    delay_unit: str
    e_spike: float
    e_synaptic_event: float
    e_neuron_update: float
    e_active_neuron_update: float | None
    e_spike_hop: float
    e_time_step: float
    t_step: float
    include_input_spikes: bool
    e_mac: float | None
    e_mac_source: str | None
    path: str = ""

    @property
    def parameters(self) -> dict:
        d = asdict(self)
        for k in ("name", "description", "source", "path"):
            d.pop(k)
        return d

    def to_json(self) -> dict:
        return {"name": self.name, "source": self.source, "description": self.description,
                "path": self.path, "parameters": self.parameters}

    # ---- energy of counts -----------------------------------------------------------
    def layer_energy(self, layer) -> float:
        """Total energy (over all samples and steps) of one core's ``LayerCounts``."""
        e_active = self.e_neuron_update if self.e_active_neuron_update is None else self.e_active_neuron_update
        spikes = layer.spikes if layer.spiking else 0
        return (self.e_spike * spikes + self.e_spike_hop * spikes
                + self.e_synaptic_event * layer.synaptic_events
                + e_active * layer.active_neuron_updates
                + self.e_neuron_update * (layer.neuron_updates - layer.active_neuron_updates))

    def input_energy(self, input_spikes: int) -> float:
        return (self.e_spike + self.e_spike_hop) * input_spikes if self.include_input_spikes else 0.0

    def delay(self, timesteps: int) -> float:
        return self.t_step * timesteps

    def evaluate(self, sim) -> dict:
        """Per-layer energies and totals of a ``SimResult``, per image."""
        n = max(sim.samples, 1)
        layers = [self.layer_energy(l) / n for l in sim.layers]
        input_e = self.input_energy(sim.input_spikes) / n
        static = self.e_time_step * sim.timesteps
        energy = sum(layers) + input_e + static
        delay = self.delay(sim.timesteps)
        return {"layers": layers, "input": input_e, "static": static, "energy": energy,
                "energy_total": energy * sim.samples, "delay": delay, "edp": energy * delay}

    def ann_energy(self, macs: int) -> float | None:
        return None if self.e_mac is None else self.e_mac * macs


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def _check_number(where: str, key: str, value, optional: bool) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise EnergyModelError(f"{where}: field {key!r} must be a finite number >= 0"
                               f"{' or null' if optional else ''}, got {value!r}")
    return float(value)


def parse_energy_model(data, where: str, path: str = "") -> EnergyModel:
    if not isinstance(data, dict):
        raise EnergyModelError(f"{where}: an energy model must be a JSON object")
    unknown = sorted(set(data) - set(FIELDS))
    missing = [k for k in FIELDS if k not in data]
    if unknown or missing:
        parts = ([f"unknown field(s) {', '.join(unknown)}"] if unknown else []) + \
                ([f"missing field(s) {', '.join(missing)}"] if missing else [])
        raise EnergyModelError(f"{where}: {'; '.join(parts)} (expected exactly: {', '.join(FIELDS)})")
    if data["format"] != FORMAT:
        raise EnergyModelError(f"{where}: format {data['format']!r} is not {FORMAT!r}")
    version = data["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise EnergyModelError(f"{where}: version {version!r} is not a positive integer")
    if version > VERSION:
        raise EnergyModelError(f"{where}: version {version} is newer than this reader ({VERSION}); upgrade hwsim")
    for k in _STRINGS:
        if not isinstance(data[k], str) or (k == "name" and not data[k].strip()):
            raise EnergyModelError(f"{where}: field {k!r} must be a{' non-empty' if k == 'name' else ''} string")
    if not isinstance(data["include_input_spikes"], bool):
        raise EnergyModelError(f"{where}: field 'include_input_spikes' must be true or false")
    if data["e_mac_source"] is not None and not isinstance(data["e_mac_source"], str):
        raise EnergyModelError(f"{where}: field 'e_mac_source' must be a string or null")
    nums = {k: _check_number(where, k, data[k], False) for k in _NUMBERS}
    nums.update({k: _check_number(where, k, data[k], True) for k in _OPTIONAL_NUMBERS})
    if nums["t_step"] <= 0:
        raise EnergyModelError(f"{where}: field 't_step' must be > 0")
    return EnergyModel(name=data["name"], description=data["description"], source=data["source"],
                       energy_unit=data["energy_unit"], delay_unit=data["delay_unit"],
                       include_input_spikes=data["include_input_spikes"], e_mac_source=data["e_mac_source"],
                       path=path, **nums)


def load_energy_model(name_or_path: str | Path) -> EnergyModel:
    """A preset name (``first_order``, ``cmos45nm``, ``loihi``) or a path to a JSON file."""
    text = str(name_or_path)
    preset = PRESET_DIR / f"{text}.json"
    if preset.is_file() and "/" not in text and not text.endswith(".json"):
        path = preset
        shown = f"preset {text!r} ({path})"
    else:
        path = Path(text)
        shown = str(path)
        if not path.is_file():
            raise EnergyModelError(f"{text}: unknown energy model: neither a preset "
                                   f"({', '.join(available_presets())}) nor an existing JSON file")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnergyModelError(f"{shown}: not a readable JSON file ({type(exc).__name__}: {exc})") from None
    return parse_energy_model(data, shown, str(path))


def ann_macs(graph) -> tuple[list[int], str]:
    """Per-layer MACs of the ANN the graph came from, and where they come from:
    ``graph.provenance['ann_macs']`` (written by the exporter) when present and valid,
    else computed from the cores (dense: out x in; conv: output neurons x C_in x kh x kw,
    a folded pool counted at the ANN's unfolded size)."""
    from hwsim.core import core_macs

    prov = getattr(graph, "provenance", {}) or {}
    macs = prov.get("ann_macs")
    if isinstance(macs, list) and macs and all(isinstance(m, int) and not isinstance(m, bool) and m >= 0
                                               for m in macs):
        return [int(m) for m in macs], "provenance"
    return [core_macs(c) for c in graph.cores], "cores"
