"""Benchmarks and load tests (not tests: nothing here asserts timings)."""
