"""The Pallas kernels study (`fused.py`), outside the package; tests: `python -m pytest benchmarks/pallas`."""
