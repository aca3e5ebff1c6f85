"""Speed and memory benchmarks (``python -m coz.bench``, ``make bench``): one module per section,
the shared report writer in ``report.py``."""
