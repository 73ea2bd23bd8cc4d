"""hwsim: what a spiking network costs on a neuromorphic core.

- ``hwsim.core.simulate``: a fast integer LIF core, bit-exact to
  ``export.fixedpoint.run_reference``, counting spikes, synaptic events and neuron
  updates per layer (CPU, or the same code on CUDA).
- ``hwsim.encode``: seeded Poisson trains (``graph.input.encode``) and the inputs file
  that replays them identically into every network compared.
- ``hwsim.energy``: the paper's first-order energy-delay model and models set from a
  JSON file (presets: ``first_order``, ``cmos45nm``, ``loihi`` in ``hwsim/presets``).
- ``hwsim.results``: the one results format (``results.json`` + ``layers.csv`` +
  ``summary.csv``) that ``reports/`` reads: ``load_results(path)``.
- ``python -m hwsim.run --edp``: the CLI.
"""
