"""The bottom layer of the chain: every on-disk record and the run layout.

trainer, export, hwsim, reports and pipeline import this package; it imports none of
them (nor torch: ``records.encoding`` applies the input rule with torch only when given
a tensor). Each record is a small dataclass with one reader and one writer that follow
the same header rule (``records.header``) and write atomically (``records.atomic``):

- ``records.layout``          RunLayout: every path of a run folder and the stage names
- ``records.timesteps``       the time steps of a run, decided once (reduced T, large T, sweep)
- ``records.encoding``        the input encoding (normalisation + signed Poisson rule)
- ``records.dataref``         where a network's data came from (to reload the same split)
- ``records.trainer_summary`` what ``python -m trainer chain`` measured
- ``records.inputs``          hwsim's replayable inputs (images, labels, seed, T)
- ``records.energy_model``    energy/delay model parameters (presets and user files)
- ``records.hwsim_results``   hwsim's results (results.json + layers.csv + summary.csv)
- ``records.table``           the one CSV writer (pandas)

The checkpoint (``trainer.checkpoint``) and the core graph (``export.graph``) follow the
same rule; their contents are defined by the package that owns their semantics.
See docs/formats.md.
"""
