"""Benchmarks: each file a script (``python benchmarks/NAME.py``) that appends its figures to RESULTS.md.

A package only so that the layer contracts (``lint-imports``) can check that nothing imports it.
"""
