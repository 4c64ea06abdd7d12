"""Experiments: configs, the `run.py` CLI, metrics assembly, report and figures."""
