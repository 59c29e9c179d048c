"""Benchmarks: each module is a script (python -m bench.NAME) printing figures and a baseline."""
