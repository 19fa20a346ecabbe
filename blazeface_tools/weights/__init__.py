"""The BlazeFace models: how their weights are built (their per-model numbers are service/specs.py)."""
