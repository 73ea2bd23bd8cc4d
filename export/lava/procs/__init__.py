"""Custom Lava Processes and their ProcessModels.

Lava imports every module of this folder to find ProcessModels, so modules here only
define classes (no work at import), and import each other by absolute name.
"""
