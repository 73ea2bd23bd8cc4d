"""Energy and delay models as records: a JSON file per model (hwsim ships presets, each
with its numbers and its source; a user passes a path to their own file with the same
fields). What the numbers mean and how hwsim applies them: ``hwsim.energy`` and
docs/energy.md.

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
``delay_unit``, ``e_mac_source``: every field is required, no other is allowed.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from records.header import RecordError, check_header, parse_json

FORMAT = "hybrid-snn-energy-model"
VERSION = 1
OLDEST_READABLE = 1

_NUMBERS = ("e_spike", "e_synaptic_event", "e_neuron_update", "e_spike_hop", "e_time_step", "t_step")
_OPTIONAL_NUMBERS = ("e_active_neuron_update", "e_mac")
_STRINGS = ("name", "description", "source", "energy_unit", "delay_unit")
FIELDS = ("format", "version") + _STRINGS + _NUMBERS + _OPTIONAL_NUMBERS + ("include_input_spikes", "e_mac_source")


class EnergyModelError(RecordError):
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
        """How results files cite the model."""
        return {"name": self.name, "source": self.source, "description": self.description,
                "path": self.path, "parameters": self.parameters}


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
    try:
        check_header(data, FORMAT, VERSION, OLDEST_READABLE, EnergyModelError, rerun="update the file's fields")
    except EnergyModelError as exc:
        raise EnergyModelError(f"{where}: {exc}") from None
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


def read_energy_model(path: str | os.PathLike, shown: str | None = None) -> EnergyModel:
    """Read and validate a model file; errors name it as ``shown`` (default: the path)."""
    path = Path(path)
    shown = shown or str(path)
    try:
        data = parse_json(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnergyModelError(f"{shown}: not a readable JSON file ({type(exc).__name__}: {exc})") from None
    return parse_energy_model(data, shown, str(path))

