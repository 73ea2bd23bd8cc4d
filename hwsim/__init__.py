"""hwsim: what a spiking network costs on a neuromorphic core.

- ``hwsim.simulate.simulate``: a fast integer LIF core, bit-exact to
  ``export.fixedpoint.run_reference``, counting spikes, synaptic events and neuron
  updates per layer (CPU, or the same code on CUDA). Its parts, one job each:
  ``plan`` (per-core weights and rewrites), ``kernel`` (the neuron recurrence, block by
  block, on one of three paths), ``events`` (the compiled CPU kernels: event-driven cores
  and neuron updates), ``int8_products`` (exact int8 products on the CPU's matrix units),
  ``counters`` (what is counted), ``device`` (device, TF32, threads).
- ``hwsim.energy``: the paper's first-order energy-delay model and models set from a
  JSON file (``records.energy_model``; presets ``first_order``, ``cmos45nm``, ``loihi``
  in ``hwsim/presets``).
- ``hwsim.results``: assembles the results document (``records.hwsim_results``) that
  ``reports/`` reads; the inputs file that replays the same Poisson trains into every
  network is ``records.inputs``.
- ``python -m hwsim.run --edp``: the CLI, over ``hwsim.run.run_hwsim``.
"""
