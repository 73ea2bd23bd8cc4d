"""The Lava side of the exporter: compat shim, soft-reset LIF processes, network builder.

Only this package imports Lava (SPEC.md section 6); importing it does not import Lava.
"""
