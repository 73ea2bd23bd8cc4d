"""Test-session settings."""
import os

# Spinning OpenMP threads stall torch when another process holds a core (2-core machines);
# passive waiting costs nothing measurable. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
