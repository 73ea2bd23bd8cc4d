"""The Lava side of the exporter: compat shim, soft-reset LIF processes, network builder.

Only this package imports Lava (so trainer and hwsim run where Lava is not installed); importing it does not import Lava.
"""
