"""The two BlazeFace models: their per-model numbers (specs) and how their weights are built."""
